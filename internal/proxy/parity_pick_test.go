package proxy

import (
	"net/http"
	"sync/atomic"
	"testing"
)

// TestHandedOffRequestPickedOnceSamePaths: a request the loops hand to
// the goroutine path is balanced once, by the goroutine path's pick, as
// Envoy's load balancer picks once per attempt: an HTTP/1.1 request to an
// HTTP/2 cluster with HTTP/2 upstreams left to the goroutine path
// (--h2loops=false) goes round robin over the cluster's two hosts, each
// served every other request. The loops picked a host for it before they
// handed it off, so that every such request, on a connection of its own,
// went to the same host.
func TestHandedOffRequestPickedOnceSamePaths(t *testing.T) {
	var served [2]atomic.Int32
	var hosts [2]string
	for i := range hosts {
		hosts[i] = rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
			served[i].Add(1)
			w.headers(id, true, 0, ":status", "200")
		})
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			served[0].Store(0)
			served[1].Store(0)
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))),
				edsCluster("h2", h2Upstream), cla("h2", hosts[0], hosts[1]))
			cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			const n = 6
			for range n {
				if got := abortAnswer(t, cl, "http://"+h.addr("egress")+"/", "x"); got != "200" {
					t.Fatalf("answered %s; want 200", got)
				}
			}
			if a, b := served[0].Load(), served[1].Load(); a != n/2 || b != n/2 {
				t.Errorf("the hosts served %d and %d requests; want %d each (round robin)", a, b, n/2)
			}
			if !p.goroutines {
				want := int64(0) // the loops stream to the HTTP/2 upstream themselves
				if p.h2Goroutines {
					want = n
				}
				if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != want {
					t.Errorf("on the loops %v, %d connections handed off; want true, %d", l.OnLoops(), l.HandedOff(), want)
				}
			}
		})
	}
}
