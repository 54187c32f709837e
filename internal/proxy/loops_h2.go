package proxy

// HTTP/2 on the event loops (weft proxy --h2loops): a loops' listener
// serves an HTTP/2 connection (h2c, or over TLS one that opens with the
// preface) on its loop when, at the connection's preface, every route of
// its connection manager is one the loops forward exactly as the
// goroutine path would, to a cluster the loops speak HTTP/1.1 to or
// (step 2) an HTTP/2 cluster, plaintext or TLS (ALPN h2, the cluster's
// SNI, trust and client certificate, as for HTTP/1.1); else the
// connection goes to the goroutine path (its streams cannot be split:
// they share the connection's HPACK state).

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
	return evloop.H2Settings{MaxStreams: maxStreams, MaxHeaderList: maxList, Windows: r.hcm.H2Windows(),
		TooManyResets: httpconn.TooManyPrematureResets, ResetLifetime: httpconn.PrematureResetLifetime}, true
}

// RouteH2 implements evloop.H2Router.
func (r *loopRouter) RouteH2(h route.Head) evloop.Target { return r.route(h, true) }

// h2MinGate is the smallest HTTP/1.1 max_connections under which the
// loops serve HTTP/2 connections: Envoy's default, which a cluster
// without circuit breakers has (App Mesh's are wide open, but for an
// http connection pool's). Past it a stream that would wait for a
// connection slot goes out without one (route), as every stream did
// before the loops applied circuit breakers: keeping every listener
// whose clusters have no circuit breakers off the loops would cost more.
const h2MinGate = 1024

// h2Queues reports whether a stream to cl may have to wait for one of
// its max_connections, below h2MinGate: the loops do not queue a stream,
// nor can they hand one over to the goroutine path, which does.
func h2Queues(cl *cluster.Cluster) bool {
	maxConns, _, _, _ := cl.Thresholds()
	return !cl.HTTP2 && cl.Queues() && maxConns < h2MinGate
}

// h2Clusters reports whether every cluster of rt is one the loops
// forward to (as Route checks per request).
func (r *loopRouter) h2Clusters(rt *route.Route) bool {
	names := []string{rt.Cluster}
	if rt.Kind == route.ToWeighted {
		names = names[:0]
		for i := range rt.Weighted {
			if !loopOps(&rt.Weighted[i].Headers) {
				return false
			}
			names = append(names, rt.Weighted[i].Name)
		}
	}
	for _, name := range names {
		cl := r.clusters.Get(name)
		if cl == nil || cl.UseDownstream || cl.Type == cluster.OriginalDst {
			return false
		}
		if h2Queues(cl) {
			return false
		}
	}
	return true
}
