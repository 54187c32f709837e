package cluster

import (
	"net/http"
	"sync"
)

// An ORIGINAL_DST cluster's hosts come and go with the destinations its
// clients ask for: each is dropped once unused for the cleanup interval
// (cleanupLoop), and, as Envoy drains a dropped host's pools, its idle
// connections go with it. The HTTP/1.1 pool forgets an address
// (h1Client.forgetAddr); x/net's HTTP/2 Transport can close the idle
// connections of every address or of none. So each destination's host
// has an HTTP/2 Transport and pool of its own, made on its first HTTP/2 request:
// otherwise a dropped destination's idle connections, and with them its
// host (they count in its cxActive), stayed until the idle timeout, an
// hour by default.

// origDstH2 is an ORIGINAL_DST cluster's HTTP/2 round tripper: it sends
// each request on its host's own Transport (the host is in the request's
// context, WithHost).
type origDstH2 struct{ c *Cluster }

func (o origDstH2) RoundTrip(req *http.Request) (*http.Response, error) {
	h, _ := req.Context().Value(hostKey{}).(*Host)
	if h == nil {
		return h2RT{o.c.h2pool}.RoundTrip(req)
	}
	return h2RT{h.origDst.pool(o.c)}.RoundTrip(req)
}

// hostH2 is an ORIGINAL_DST host's HTTP/2 Transport and its connections
// (an h2Pool, as the cluster's own), made on first use.
type hostH2 struct {
	mu sync.Mutex
	p  *h2Pool
}

func (p *hostH2) pool(c *Cluster) *h2Pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.p == nil {
		t := c.newH2Transport()
		p.p = newH2Pool(c, t)
		t.ConnPool = p.p
	}
	return p.p
}

// closeIdle closes the host's idle HTTP/2 connections, if it has any.
func (p *hostH2) closeIdle() {
	p.mu.Lock()
	pool := p.p
	p.mu.Unlock()
	if pool != nil {
		pool.closeIdle()
	}
}
