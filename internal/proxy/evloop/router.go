package evloop

import (
	"net/netip"
	"sync/atomic"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// ConfigRouter routes with a compiled route configuration (virtual
// hosts, routes and their matchers, weighted clusters, direct responses)
// over fixed host lists, round robin. What a route does to the request
// beyond choosing its cluster (rewrites, header mutations) is not applied.
type ConfigRouter struct {
	Routes *proxyroute.Config
	Hosts  map[string][]netip.AddrPort // by cluster name
	next   atomic.Uint64
}

// Route implements Router.
func (c *ConfigRouter) Route(h proxyroute.Head) Target {
	return RouteWith(c.Routes, h, func(cluster string) (netip.AddrPort, bool) {
		hs := c.Hosts[cluster]
		if len(hs) == 0 {
			return netip.AddrPort{}, false
		}
		return hs[c.next.Add(1)%uint64(len(hs))], true
	})
}

// RouteWith chooses the route of h in rc as weft proxy's connection
// manager does (no normalisation of the path), and asks host for a host
// of the cluster it names.
func RouteWith(rc *proxyroute.Config, h proxyroute.Head, host func(cluster string) (netip.AddrPort, bool)) Target {
	path, ok := proxyroute.EscapedPath(h.Target(), nil)
	if !ok {
		return Target{Status: 400}
	}
	var rt *proxyroute.Route
	if rc != nil {
		_, rt = rc.MatchHead(h, path)
	}
	if rt == nil {
		return Target{Status: 404}
	}
	if rt.Kind == proxyroute.Direct {
		return Target{Status: rt.DirectStatus, Body: rt.DirectBody}
	}
	name, _, _ := rt.Pick()
	hp, ok := host(name)
	if !ok {
		return Target{Status: 503, Body: "no healthy upstream"}
	}
	return Target{Cluster: name, Host: hp}
}
