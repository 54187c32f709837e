package cluster

import (
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

func (c *Cluster) buildLoadAssignment(la *endpointv3.ClusterLoadAssignment, path string) error {
	switch c.Type {
	case EDS, OriginalDst:
		if la != nil && len(la.GetEndpoints()) > 0 {
			return fmt.Errorf("%s: not allowed for EDS and ORIGINAL_DST clusters", path)
		}
		return nil
	}
	if la == nil {
		return fmt.Errorf("%s: required for STATIC and DNS clusters", path)
	}
	if c.Type == Static {
		hosts, apply, err := hostsFromCLA(la, path, nil)
		if err != nil {
			return err
		}
		apply()
		c.hosts.Store(newHostSet(hosts))
		return nil
	}
	err := walkCLA(la, path, func(_ *corev3.Locality, _ *endpointv3.LbEndpoint, sa *corev3.SocketAddress, w uint32) error {
		c.dnsTarget = append(c.dnsTarget, dnsTarget{host: sa.GetAddress(), port: sa.GetPortValue(), weight: w})
		return nil
	})
	if err != nil {
		return err
	}
	if c.Type == LogicalDNS && len(c.dnsTarget) != 1 {
		return fmt.Errorf("%s: LOGICAL_DNS clusters take exactly one endpoint, got %d", path, len(c.dnsTarget))
	}
	c.dnsState = make([]dnsState, len(c.dnsTarget))
	c.hosts.Store(newHostSet(nil))
	return nil
}

// walkCLA checks a ClusterLoadAssignment and calls fn for every endpoint,
// with its locality and weight.
func walkCLA(la *endpointv3.ClusterLoadAssignment, path string, fn func(*corev3.Locality, *endpointv3.LbEndpoint, *corev3.SocketAddress, uint32) error) error {
	// policy.overprovisioning_factor only matters with several priorities
	// or locality weighting, which weft does not do.
	if err := strict.Fields(la, path, "cluster_name", "endpoints", "policy"); err != nil {
		return err
	}
	if p := la.GetPolicy(); p != nil {
		if err := strict.Fields(p, path+".policy", "overprovisioning_factor", "weighted_priority_health"); err != nil {
			return err
		}
	}
	for i, loc := range la.GetEndpoints() {
		lp := strict.Join(path, "endpoints", i)
		if err := strict.Fields(loc, lp, "locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata"); err != nil {
			return err
		}
		if loc.GetPriority() != 0 {
			return strict.Value(lp, "priority", loc.GetPriority(), "weft proxy balances over priority 0 only")
		}
		for j, ep := range loc.GetLbEndpoints() {
			ep2 := strict.Join(lp, "lb_endpoints", j)
			if err := strict.Fields(ep, ep2, "endpoint", "health_status", "metadata", "load_balancing_weight"); err != nil {
				return err
			}
			e := ep.GetEndpoint()
			if err := strict.Fields(e, ep2+".endpoint", "address", "hostname", "health_check_config"); err != nil {
				return err
			}
			if hc := e.GetHealthCheckConfig(); hc != nil {
				if err := strict.Fields(hc, ep2+".endpoint.health_check_config", "port_value"); err != nil {
					return err
				}
			}
			a := e.GetAddress()
			if err := strict.Fields(a, ep2+".endpoint.address", "socket_address"); err != nil {
				return err
			}
			sa := a.GetSocketAddress()
			if sa == nil {
				return fmt.Errorf("%s.endpoint.address: socket_address is required", ep2)
			}
			if err := strict.Fields(sa, ep2+".endpoint.address.socket_address", "protocol", "address", "port_value", "ipv4_compat"); err != nil {
				return err
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return strict.Value(ep2, "socket_address.protocol", sa.GetProtocol(), "TCP only")
			}
			w := uint32(1)
			if ep.GetLoadBalancingWeight() != nil {
				w = ep.GetLoadBalancingWeight().GetValue()
			}
			if err := fn(loc.GetLocality(), ep, sa, w); err != nil {
				return fmt.Errorf("%s: %w", ep2, err)
			}
		}
	}
	return nil
}

// hostsFromCLA returns hosts for an assignment, and what applying it
// changes in the hosts it keeps. A host of old that keeps its address and
// locality is kept, so that its health, outlier and request state survive
// the update; its new weight and EDS health status are set by apply, once
// the whole assignment is known to be good (an assignment refused halfway
// changes nothing). A host that moves to another locality is a new Host
// with the old one's health flags.
func hostsFromCLA(la *endpointv3.ClusterLoadAssignment, path string, old *hostSet) (hosts []*Host, apply func(), err error) {
	prev := map[string]*Host{}
	if old != nil {
		for _, h := range old.hosts {
			prev[h.Addr] = h
		}
	}
	type change struct {
		h                   *Host
		weight              uint32
		unhealthy, draining bool
	}
	var changes []change
	seen := map[string]bool{}
	err = walkCLA(la, path, func(l *corev3.Locality, ep *endpointv3.LbEndpoint, sa *corev3.SocketAddress, w uint32) error {
		ip := net.ParseIP(sa.GetAddress())
		if ip == nil {
			return fmt.Errorf("address %q is not an IP address", sa.GetAddress())
		}
		addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
		if seen[addr] {
			return nil // Envoy dedups identical endpoints too
		}
		seen[addr] = true
		h := prev[addr]
		loc := locality{region: l.GetRegion(), zone: l.GetZone(), subZone: l.GetSubZone()}
		if h == nil || h.locality != loc {
			nh := newHost(addr, w)
			nh.locality = loc
			if h != nil {
				nh.flags.Store(h.flags.Load())
			}
			h = nh
		}
		// As Envoy's HostImplBase::setEdsHealthFlag (1.34).
		st := ep.GetHealthStatus()
		changes = append(changes, change{h, w, st == corev3.HealthStatus_UNHEALTHY || st == corev3.HealthStatus_TIMEOUT,
			st == corev3.HealthStatus_DRAINING})
		hosts = append(hosts, h)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return hosts, func() {
		for _, c := range changes {
			c.h.weight.Store(c.weight)
			c.h.setFlag(edsUnhealthy, c.unhealthy)
			c.h.setFlag(edsDraining, c.draining)
		}
	}, nil
}

// CheckEndpoints validates an assignment without applying it.
func CheckEndpoints(la *endpointv3.ClusterLoadAssignment) error {
	_, _, err := hostsFromCLA(la, "cluster_load_assignment "+la.GetClusterName(), nil)
	return err
}

func (c *Cluster) setHosts(hosts []*Host) {
	if c.hc != nil {
		for _, h := range hosts {
			if !h.checked.Load() && h.flags.Load()&failedActiveHC == 0 {
				// New hosts are unhealthy until their first check passes, as in Envoy.
				h.setFlag(failedActiveHC|pendingActiveHC, true)
			}
		}
	}
	old := c.hosts.Load()
	c.hosts.Store(newHostSet(hosts))
	if c.membershipChanged(old, hosts) {
		c.Stats.membershipChange.Inc()
	}
	// LOGICAL_DNS keeps its connections when its one address changes, as
	// Envoy's does (round-robin DNS would close them every refresh);
	// ORIGINAL_DST's go with its cleanup (cleanupLoop). Envoy drains the
	// pools of the hosts that left (ThreadLocalClusterManagerImpl::
	// removeHosts, drainOrCloseConnPools with DrainAndDelete, on every
	// worker): the HTTP/1.1 pool forgets them, the HTTP/2 one drains
	// their connections, and the event loops drop their pools of them
	// (Manager.OnHostsGone), after the swap above, so that no pick
	// returns them again.
	//
	// A host is gone unless the update keeps its Host (same address and
	// locality, hostsFromCLA): one added again, or moved to another
	// locality, is a new Host, whose address's connections are the old
	// one's, drained as Envoy drains the pools of the HostSharedPtr it
	// removed, whatever the address ("if a host is readded it will be a
	// different physical HostSharedPtr", removeHosts).
	if c.Type != OriginalDst && c.Type != LogicalDNS {
		in := make(map[string]bool, len(hosts))
		kept := make(map[*Host]bool, len(hosts))
		for _, h := range hosts {
			in[h.Addr], kept[h] = true, true
		}
		var gone []string
		replaced := map[string]bool{}
		if old != nil {
			for _, h := range old.hosts {
				if !kept[h] {
					gone = append(gone, h.Addr)
					if in[h.Addr] {
						replaced[h.Addr] = true
					}
				}
			}
		}
		if c.h1 != nil {
			c.h1.forget(func(addr string, h *Host) bool { return in[addr] && (h == nil || kept[h]) })
		}
		if c.h2pool != nil {
			c.h2pool.drain(func(addr string) bool { return in[addr] }, func(addr string) bool { return replaced[addr] })
		}
		if c.gone != nil {
			c.gone.tell(c.Name, gone)
		}
	}
	select {
	case c.hostWake <- struct{}{}:
	default:
	}
}

// membershipChanged reports whether hosts adds a host to old or removes
// one, which is what Envoy counts as membership_change. A host is its
// address in its locality: Envoy replaces a host that moves to another
// locality (one removed, one added), and changes a weight or a health
// status in place, which is no change of membership.
func (c *Cluster) membershipChanged(old *hostSet, hosts []*Host) bool {
	var was []*Host
	if old != nil {
		was = old.hosts
	}
	if c.Type == LogicalDNS {
		// Envoy's LOGICAL_DNS cluster has one host, created by the first
		// answer, that takes each later address in place.
		return (len(was) == 0) != (len(hosts) == 0)
	}
	type member struct {
		addr string
		loc  locality
	}
	in := make(map[member]bool, len(was))
	for _, h := range was {
		in[member{h.Addr, h.locality}] = true
	}
	next := make(map[member]bool, len(hosts))
	for _, h := range hosts {
		m := member{h.Addr, h.locality}
		if !in[m] {
			return true
		}
		next[m] = true
	}
	return len(next) != len(in)
}

// setEndpoints applies an EDS assignment, counted as one update.
func (c *Cluster) setEndpoints(la *endpointv3.ClusterLoadAssignment) error {
	hosts, apply, err := hostsFromCLA(la, "cluster_load_assignment "+la.GetClusterName(), c.hosts.Load())
	if err != nil {
		return err
	}
	apply()
	c.setHosts(hosts)
	c.Stats.updateSuccess.Inc()
	return nil
}
