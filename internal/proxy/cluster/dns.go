package cluster

import (
	"context"
	"net"
	"net/netip"
	"strconv"
)

// resolveLoop resolves STRICT_DNS and LOGICAL_DNS targets now and every
// dns_refresh_rate, replacing the host set when the answer changes.
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
		if err != nil {
			c.log.Warn("dns resolution failed; keeping the previous hosts", "host", t.host, "err", err)
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
	ips, err := net.DefaultResolver.LookupNetIP(ctx, c.dnsFamily, host)
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
