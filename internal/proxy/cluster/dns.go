package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// dnsOutcome is how a target's resolution ended.
type dnsOutcome uint8

const (
	dnsAddresses dnsOutcome = iota // an answer with addresses
	dnsEmpty                       // an answer without addresses: NXDOMAIN, or no record of the family
	dnsFailed                      // no answer: SERVFAIL, a timeout, no server
)

// dnsState is what a DNS cluster keeps of one target between
// resolutions.
type dnsState struct {
	hosts []*Host    // the target's hosts, from its last answer taken
	last  dnsOutcome // how its last resolution ended, to log a change once
}

// resolveLoop resolves STRICT_DNS and LOGICAL_DNS targets now and every
// dns_refresh_rate.
func (c *Cluster) resolveLoop(ctx context.Context) {
	defer c.wg.Done()
	for {
		c.resolveOnce(ctx)
		if !sleep(ctx, c.dnsRate) {
			return
		}
	}
}

// resolveOnce resolves each target on its own, as Envoy's STRICT_DNS
// cluster has a ResolveTarget per name (strict_dns_cluster.cc): a target
// whose resolution fails keeps its hosts, one whose answer has no
// address has none, and the cluster's host set is rebuilt from every
// target's hosts when one's change. A LOGICAL_DNS cluster's one target
// takes only an answer with addresses, and only its first
// (logical_dns_cluster.cc). update_attempt, update_success and
// update_failure count as those two files do.
func (c *Cluster) resolveOnce(ctx context.Context) {
	for i := range c.dnsTarget {
		if !c.resolveTarget(ctx, i) {
			continue
		}
		var hosts []*Host
		for _, s := range c.dnsState {
			hosts = append(hosts, s.hosts...)
		}
		c.setHosts(hosts)
	}
}

// resolveTarget resolves target i and reports whether its hosts changed.
func (c *Cluster) resolveTarget(ctx context.Context, i int) bool {
	t, s := c.dnsTarget[i], &c.dnsState[i]
	c.Stats.updateAttempt.Inc()
	ips, err := c.lookup(ctx, t.host)
	if ctx.Err() != nil {
		return false // stopping: Envoy cancels the query, and nothing follows
	}
	switch {
	case err != nil:
		c.Stats.updateFailure.Inc()
		c.logOutcome(s, dnsFailed, "dns resolution failed; keeping the target's hosts", "host", t.host, "err", err)
		return false
	case len(ips) == 0 && c.Type == LogicalDNS:
		// Envoy's logical DNS cluster counts an answer without
		// addresses a failure and keeps its host's address.
		c.Stats.updateFailure.Inc()
		c.logOutcome(s, dnsEmpty, "dns answer without addresses; keeping the previous host", "host", t.host)
		return false
	case len(ips) == 0:
		c.logOutcome(s, dnsEmpty, "dns answer without addresses; the target has no hosts", "host", t.host)
	default:
		c.logOutcome(s, dnsAddresses, "dns answer with addresses again", "host", t.host)
	}
	c.Stats.updateSuccess.Inc()
	if c.Type == LogicalDNS {
		ips = ips[:1] // LOGICAL_DNS connects to the first address only
	}
	old := make(map[string]*Host, len(s.hosts))
	for _, h := range s.hosts {
		old[h.Addr] = h
	}
	hosts := make([]*Host, 0, len(ips))
	seen := make(map[string]bool, len(ips))
	changed := false
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(int(t.port)))
		if seen[addr] {
			continue // as Envoy, one host per address of an answer
		}
		seen[addr] = true
		h := old[addr]
		if h == nil {
			h = newHost(addr, t.weight)
			h.Hostname = t.host
			changed = true
		}
		hosts = append(hosts, h)
	}
	if !changed && len(hosts) == len(s.hosts) {
		return false // the same addresses, perhaps in another order
	}
	s.hosts = hosts
	return true
}

// logOutcome logs a target's resolution at Warn when it ends otherwise
// than the last one did and a degraded state begins, at Info when
// addresses come back, and at Debug when it ends as the last one did,
// so that a name without addresses is not logged every dns_refresh_rate
// (Envoy logs every resolution at debug).
func (c *Cluster) logOutcome(s *dnsState, o dnsOutcome, msg string, args ...any) {
	level := slog.LevelDebug
	switch {
	case o == s.last:
	case o == dnsAddresses:
		level = slog.LevelInfo
	default:
		level = slog.LevelWarn
	}
	s.last = o
	c.log.Log(context.Background(), level, msg, args...)
}

// lookup resolves host as dns_lookup_family says, as Envoy's c-ares
// resolver does (dns_impl.cc): V4_ONLY and V6_ONLY ask their family;
// AUTO asks IPv6, then IPv4 when IPv6 gave no address, and V4_PREFERRED
// the other way round; ALL asks both. It returns the addresses, or none
// and a nil error for an answer without addresses, or an error when no
// family asked answered. A fallback family's answer without addresses
// completes the resolution however the other family's ended, as
// Envoy's does. ALL fails when a family failed and neither gave an
// address: c-ares then reports whichever family's status came last, and
// keeping the hosts is the outcome that does not depend on timing.
func (c *Cluster) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	r := c.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	switch c.dnsLookup {
	case clusterv3.Cluster_V4_ONLY:
		return lookupFamily(ctx, r, "ip4", host)
	case clusterv3.Cluster_V6_ONLY:
		return lookupFamily(ctx, r, "ip6", host)
	case clusterv3.Cluster_ALL:
		type answer struct {
			ips []netip.Addr
			err error
		}
		v6 := make(chan answer, 1)
		go func() { // ends when its lookup does, which ctx bounds; v6 is buffered
			ips, err := lookupFamily(ctx, r, "ip6", host)
			v6 <- answer{ips, err}
		}()
		ips, err := lookupFamily(ctx, r, "ip4", host)
		a := <-v6
		if ips = append(ips, a.ips...); len(ips) > 0 {
			return ips, nil
		}
		return nil, errors.Join(err, a.err)
	}
	first, second := "ip6", "ip4" // AUTO
	if c.dnsLookup == clusterv3.Cluster_V4_PREFERRED {
		first, second = second, first
	}
	ips, err := lookupFamily(ctx, r, first, host)
	if len(ips) > 0 {
		return ips, nil
	}
	ips, err2 := lookupFamily(ctx, r, second, host)
	if len(ips) > 0 || err2 == nil || err == nil {
		return ips, nil
	}
	return nil, err2
}

// lookupFamily asks r for one family's addresses ("ip4" or "ip6"). Go's
// resolver reports an answer without addresses (NXDOMAIN, or no record
// of the type) as not found, which c-ares's ARES_ENOTFOUND and
// ARES_ENODATA are, and Envoy completes as a success without records:
// here no addresses and no error.
func lookupFamily(ctx context.Context, r *net.Resolver, network, host string) ([]netip.Addr, error) {
	ips, err := r.LookupNetIP(ctx, network, host)
	if dnsErr := (*net.DNSError)(nil); errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	// A name /etc/hosts holds without an address of this family: Go says
	// "no suitable address found", where c-ares goes on to DNS and
	// normally completes without addresses.
	if addrErr := (*net.AddrError)(nil); errors.As(err, &addrErr) {
		return nil, nil
	}
	return ips, err
}
