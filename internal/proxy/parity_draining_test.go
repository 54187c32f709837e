package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestEDSDrainingExcludedSamePaths: a host EDS marks DRAINING is
// unhealthy and excluded, as in Envoy since 1.30 (EDS_STATUS_DRAINING,
// excludeBasedOnHealthFlag; isHostSetInPanic counts hosts less excluded
// ones): with one healthy host and two DRAINING, the healthy one is 100%
// of the hosts counted, so no panic, and it serves every request, over
// HTTP/1.1 and h2c, on every path; /clusters shows the others'
// health_flags as /eds_status_draining. weft took DRAINING for
// UNHEALTHY: one healthy host of three was a panic, and the requests
// went round robin over all three.
func TestEDSDrainingExcludedSamePaths(t *testing.T) {
	var served [3]atomic.Int32
	var addrs [3]string
	for i := range addrs {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served[i].Add(1) }))
		t.Cleanup(srv.Close)
		addrs[i] = srv.Listener.Addr().String()
	}
	la := cla("c", addrs[:]...)
	for _, ep := range la.Endpoints[0].LbEndpoints[1:] {
		ep.HealthStatus = corev3.HealthStatus_DRAINING
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			for i := range served {
				served[i].Store(0)
			}
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c"), la)
			waitUntil(t, 5*time.Second, "the three hosts", func() bool { c := h.p.clusters.Get("c"); return c != nil && len(c.Hosts()) == 3 })
			h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			h2c := h2cClient(t)
			const n = 15
			for range n {
				for _, cl := range []*http.Client{h1, h2c} {
					if got := abortAnswer(t, cl, "http://"+h.addr("egress")+"/", "x"); got != "200" {
						t.Fatalf("answered %s; want 200", got)
					}
				}
			}
			if a, b, c := served[0].Load(), served[1].Load(), served[2].Load(); a != 2*n || b != 0 || c != 0 {
				t.Errorf("the healthy host served %d requests, the DRAINING ones %d and %d; want %d, 0, 0", a, b, c, 2*n)
			}
			page := h.admin("/clusters")
			for i, want := range []string{"healthy", "/eds_status_draining", "/eds_status_draining"} {
				if line := "c::" + addrs[i] + "::health_flags::" + want + "\n"; !strings.Contains(page, line) {
					t.Errorf("/clusters lacks %q:\n%s", line, page)
				}
			}
			// Envoy's membership_excluded counts them (2), membership_healthy not.
			if ex, ok, tot := h.stat("cluster.c.membership_excluded"), h.stat("cluster.c.membership_healthy"), h.stat("cluster.c.membership_total"); ex != 2 || ok != 1 || tot != 3 {
				t.Errorf("membership_excluded %d, membership_healthy %d, membership_total %d; want 2, 1, 3", ex, ok, tot)
			}
			if l := h.listener("egress"); !p.h2Goroutines && (!l.OnLoops() || l.HandedOff() != 0) {
				t.Errorf("on the loops %v, %d connections handed off; want true, 0", l.OnLoops(), l.HandedOff())
			}
		})
	}
}
