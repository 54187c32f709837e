package proxy

// h2c on the event loops (weft proxy --h2loops, step 1): a loops'
// listener serves an h2c connection on its loop when, at the
// connection's preface, every route of its connection manager is one the
// loops forward exactly as the goroutine path would, to a cluster the
// loops speak HTTP/1.1 to or (step 2) a plaintext HTTP/2 cluster; else the connection goes to the goroutine path
// (its streams cannot be split: they share the connection's HPACK
// state).

import (
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// H2 implements evloop.H2Router.
func (r *loopRouter) H2() (evloop.H2Settings, bool) {
	rc := r.hcm.RouteConfig()
	if rc == nil || rc.MatchesRequestID {
		return evloop.H2Settings{}, false
	}
	ok := true
	rc.EachVirtualHost(func(vh *route.VirtualHost) bool {
		for _, rt := range vh.Routes {
			if !loopRoute(rc, vh, rt) || !r.h2Clusters(rt) {
				ok = false
				return false
			}
		}
		return true
	})
	if !ok {
		return evloop.H2Settings{}, false
	}
	maxStreams, maxList := r.hcm.H2Limits()
	return evloop.H2Settings{MaxStreams: maxStreams, MaxHeaderList: maxList,
		TooManyResets: httpconn.TooManyPrematureResets, ResetLifetime: httpconn.PrematureResetLifetime}, true
}

// RouteH2 implements evloop.H2Router.
func (r *loopRouter) RouteH2(h route.Head) evloop.Target { return r.route(h, true) }

// h2Clusters reports whether every cluster of rt is one the loops
// forward to (as Route checks per request).
func (r *loopRouter) h2Clusters(rt *route.Route) bool {
	names := []string{rt.Cluster}
	if rt.Kind == route.ToWeighted {
		names = names[:0]
		for i := range rt.Weighted {
			if !emptyOps(&rt.Weighted[i].Headers) {
				return false
			}
			names = append(names, rt.Weighted[i].Name)
		}
	}
	for _, name := range names {
		cl := r.clusters.Get(name)
		if cl == nil || cl.HTTP2 && !loopH2Upstream(cl) || cl.UseDownstream || cl.Type == cluster.OriginalDst {
			return false
		}
		if maxConns, maxPending, maxRequests, _ := cl.Thresholds(); min(maxConns, maxPending, maxRequests) < loopMinThreshold {
			return false
		}
	}
	return true
}

// loopH2Upstream reports whether the loops forward an h2c stream to cl,
// an HTTP/2 cluster, over HTTP/2 connections of their own (h2 step 2):
// plaintext (h2c) only; h2 over TLS (ALPN) stays on the goroutine path.
func loopH2Upstream(cl *cluster.Cluster) bool { return cl.TLS == nil }
