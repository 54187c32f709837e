package cluster

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
)

// resolveLoop resolves STRICT_DNS and LOGICAL_DNS targets now and every
// dns_refresh_rate, replacing the host set when the answer changes. A
// failed resolution keeps the hosts; an answer without addresses empties
// a STRICT_DNS target and leaves a LOGICAL_DNS cluster's host (Envoy's
// strict_dns_cluster.cc and logical_dns_cluster.cc).
func (c *Cluster) resolveLoop(ctx context.Context) {
	defer c.wg.Done()
	for {
		c.resolveOnce(ctx)
		if !sleep(ctx, c.dnsRate) {
			return
		}
	}
}

func (c *Cluster) resolveOnce(ctx context.Context) {
	old := map[string]*Host{}
	for _, h := range c.Hosts() {
		old[h.Addr] = h
	}
	var hosts []*Host
	changed := false
	for _, t := range c.dnsTarget {
		ips, err := c.lookup(ctx, t.host)
		if dnsErr := (*net.DNSError)(nil); errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			// An answer without addresses: the name does not exist, or
			// has no record of the family asked. Envoy's c-ares resolver
			// completes both (ARES_ENOTFOUND, ARES_ENODATA) as a success
			// with no records, which a STRICT_DNS target takes (it then
			// has no hosts) and a LOGICAL_DNS cluster does not.
			ips, err = nil, nil
		}
		if err != nil {
			c.log.Warn("dns resolution failed; keeping the previous hosts", "host", t.host, "err", err)
			return
		}
		if len(ips) == 0 && c.Type == LogicalDNS {
			// As Envoy's logical DNS cluster (startResolve): its one
			// host keeps the address it had rather than go away.
			c.log.Warn("dns answer without addresses; keeping the previous host", "host", t.host)
			return
		}
		if c.Type == LogicalDNS && len(ips) > 1 {
			ips = ips[:1] // LOGICAL_DNS connects to the first address only
		}
		for _, ip := range ips {
			addr := net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(int(t.port)))
			h := old[addr]
			if h == nil {
				h = newHost(addr, t.weight)
				h.Hostname = t.host
				changed = true
			}
			hosts = append(hosts, h)
		}
	}
	if !changed && len(hosts) == len(old) {
		return
	}
	c.setHosts(hosts)
}

func (c *Cluster) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	r := c.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ips, err := r.LookupNetIP(ctx, c.dnsFamily, host)
	if err != nil {
		return nil, err
	}
	if c.dnsPrefer != "" {
		var pref []netip.Addr
		for _, ip := range ips {
			if (c.dnsPrefer == "ip4") == ip.Unmap().Is4() {
				pref = append(pref, ip)
			}
		}
		if len(pref) > 0 {
			ips = pref
		}
	}
	return ips, nil
}
