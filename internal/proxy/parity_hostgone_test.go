package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// hostStat reads a host's counter or gauge (cx_active, cx_connect_fail,
// ...) from the admin /clusters of h: -1 when the host is not listed.
func hostStat(h *harness, cluster, addr, name string) int64 {
	v := int64(-1)
	prefix := cluster + "::" + addr + "::" + name + "::"
	for _, line := range strings.Split(h.admin("/clusters"), "\n") {
		if s, ok := strings.CutPrefix(line, prefix); ok {
			_, _ = fmt.Sscan(s, &v)
		}
	}
	return v
}

// getOK sends a GET to url with c and fails the test unless it is
// answered 200 with body.
func getOK(t *testing.T, c *http.Client, url, body string) {
	t.Helper()
	if a := getAnswer(t, c, url); a != "200 "+body {
		t.Fatalf("GET %s: %q, want %q", url, a, "200 "+body)
	}
}

// heldHalfway answers "first half, ", flushed, then says so on started
// and writes "second half" once release is closed.
func heldHalfway(started chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first half, ")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "second half")
	})
}

// slowGet GETs url with c from an upstream that holds its response
// (heldHalfway) and returns once started says the upstream began it,
// failing the test if the request ends first. The function it returns
// waits for the response's end and gives its answer, "status body", and
// any error of the request or of its body's read.
func slowGet(t *testing.T, c *http.Client, url string, started <-chan struct{}) func() (string, error) {
	t.Helper()
	type result struct {
		answer string
		err    error
	}
	slow := make(chan result, 1)
	go func() { // ends with the slow response, which the test releases
		resp, err := c.Get(url)
		if err != nil {
			slow <- result{err: err}
			return
		}
		a, err := readAnswer(resp)
		slow <- result{a, err}
	}()
	select {
	case <-started:
	case r := <-slow:
		t.Fatalf("the slow request ended before its upstream answered: %+v", r)
	}
	return func() (string, error) {
		r := <-slow
		return r.answer, r.err
	}
}

// awaitOnlyStays waits until the proxy has closed every connection to
// left (what names it) and cluster c's upstream_cx_active counts the
// connections open to stays alone.
func awaitOnlyStays(t *testing.T, h *harness, left, stays *closingUpstream, what string) {
	t.Helper()
	waitUntil(t, 20*time.Second, what+"'s connection closed by the proxy after its response", func() bool {
		open, _ := left.counts()
		return open == 0
	})
	open, _ := stays.counts()
	waitUntil(t, 10*time.Second, fmt.Sprintf("upstream_cx_active back to the other host's %d", open), func() bool {
		return h.stat("cluster.c.upstream_cx_active") == int64(open)
	})
}

// TestRemovedHostIdleDrainedSamePaths: an EDS update that removes a host
// closes the proxy's idle connections to it at once, on every path, as
// Envoy's workers drain a removed host's pools
// (ThreadLocalClusterManagerImpl::removeHosts): the upstream sees its
// connection's close, the cluster's upstream_cx_active counts the other
// host's connections alone, which stay open and in use. Added again, the
// host starts fresh: a new connection, counted from 0 in /clusters. The
// loops heard of no removal: their pool kept the idle connection, and
// upstream_cx_active counted it, until the pool's sweep after a minute
// without a request (hostPoolIdle); a host added back within it reused
// the old connection.
func TestRemovedHostIdleDrainedSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/front"))
	leaf := ca.Issue(t, []string{"back.local"})
	for _, tc := range upstreamKinds {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					tlsCfg, mods := tc.setup(t, leaf, client)
					gone, stays := newClosingUpstream(t, tc.h2, tlsCfg), newClosingUpstream(t, tc.h2, tlsCfg)
					h := newHarness(t, p.on)
					base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c", mods...)}
					h.push(append(base, cla("c", gone.addr, stays.addr))...)
					url := "http://" + h.addr("egress") + "/x"
					c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
					defer c.Transport.(*http.Transport).CloseIdleConnections()
					waitUntil(t, 10*time.Second, "a connection to each host", func() bool {
						getOK(t, c, url, "ok")
						a, _ := gone.counts()
						b, _ := stays.counts()
						return a > 0 && b > 0
					})
					openStays, acceptedStays := stays.counts()
					_, acceptedGone := gone.counts()

					h.push(append(base, cla("c", stays.addr))...)
					// The upstream sees the close: its server's read ends.
					waitUntil(t, 20*time.Second, "the removed host's connections closed by the proxy", func() bool {
						open, _ := gone.counts()
						return open == 0
					})
					waitUntil(t, 10*time.Second, fmt.Sprintf("upstream_cx_active back to the other host's %d", openStays), func() bool {
						return h.stat("cluster.c.upstream_cx_active") == int64(openStays)
					})
					getOK(t, c, url, "ok")
					if open, accepted := stays.counts(); open != openStays || accepted != acceptedStays {
						t.Errorf("the host that stays: %d connections open, %d accepted; want %d and %d, kept and reused",
							open, accepted, openStays, acceptedStays)
					}
					if got := h.stat("cluster.c.upstream_cx_active"); got != int64(openStays) {
						t.Errorf("upstream_cx_active = %d, want %d", got, openStays)
					}

					h.push(append(base, cla("c", gone.addr, stays.addr))...)
					waitUntil(t, 10*time.Second, "a new connection to the host added again", func() bool {
						getOK(t, c, url, "ok")
						_, accepted := gone.counts()
						return accepted > acceptedGone
					})
					open, accepted := gone.counts()
					if active, total := hostStat(h, "c", gone.addr, "cx_active"), hostStat(h, "c", gone.addr, "cx_total"); active != int64(open) ||
						total != int64(accepted-acceptedGone) {
						t.Errorf("the host added again: cx_active %d, cx_total %d in /clusters; want %d and %d (counted afresh)",
							active, total, open, accepted-acceptedGone)
					}
				})
			}
		})
	}
}

// TestRemovedHostBusyDrainedSamePaths: a removed host's connection that
// serves a response when the update comes finishes it intact, then
// closes, not reused, as Envoy drains a busy connection
// (DrainBehavior::DrainAndDelete: an HTTP/1.1 one closes at its
// exchange's end, an HTTP/2 one takes no new stream and closes after its
// last), and upstream_cx_active returns to 0. The other requests of the
// client's h2c connection go to the host that replaced it. The loops put
// the connection back in their pool, kept until its sweep.
func TestRemovedHostBusyDrainedSamePaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		h2   bool
	}{
		{"HTTP/1.1 upstream", false},
		{"HTTP/2 upstream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					started, release := make(chan struct{}, 1), make(chan struct{})
					gone := newClosingUpstreamWith(t, tc.h2, nil, heldHalfway(started, release))
					stays := newClosingUpstream(t, tc.h2, nil)
					var mods []func(*clusterv3.Cluster)
					if tc.h2 {
						mods = append(mods, h2Upstream)
					}
					h := newHarness(t, p.on)
					base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c", mods...)}
					h.push(append(base, cla("c", gone.addr))...)
					url := "http://" + h.addr("egress") + "/x"
					c := h2cClient(t)
					slow := slowGet(t, c, url, started)
					h.push(append(base, cla("c", stays.addr))...)
					// Sent on the slow request's h2c connection, and on
					// the loops served by its loop after the update's
					// removal reached it (posted before the push's ACK).
					if a, _ := h2Do(t, c, url, false); a != (h2Answer{status: 200, body: "ok"}) {
						t.Fatalf("a request after the update: %+v, want 200 ok from the host that stays", a)
					}
					if open, _ := gone.counts(); open != 1 {
						t.Fatalf("the removed host's busy connection: %d open, want 1 until its response ends", open)
					}
					close(release)
					if a, err := slow(); err != nil || a != "200 first half, second half" {
						t.Fatalf("the response in flight on the removed host: %q, %v; want 200 and its whole body", a, err)
					}
					awaitOnlyStays(t, h, gone, stays, "the removed host")
				})
			}
		})
	}
}

// TestHostConnectFailSamePaths: a failed connect counts in the host's
// cx_connect_fail (admin /clusters) as in the cluster's
// upstream_cx_connect_fail, on every path: a refused TCP connect, to an
// HTTP/1.1 or an HTTP/2 cluster, and a failed TLS handshake. The loops
// counted the cluster's alone (the host's read 0).
func TestHostConnectFailSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/front"))
	// A TLS upstream whose certificate names another host: the
	// handshake fails.
	wrong := newClosingUpstream(t, false, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"other.local"}).TLS(t)}})
	for _, tc := range []struct {
		name string
		addr func(t *testing.T) string
		mods []func(*clusterv3.Cluster)
	}{
		{"refused, HTTP/1.1 cluster", deadAddr, nil},
		{"refused, HTTP/2 cluster", deadAddr, []func(*clusterv3.Cluster){h2Upstream}},
		{"TLS handshake failed", func(*testing.T) string { return wrong.addr }, []func(*clusterv3.Cluster){upstreamTLS(client, "back.local", "back.local")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					addr := tc.addr(t)
					h := newHarness(t, p.on)
					h.push(httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c", tc.mods...), cla("c", addr))
					c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
					defer c.Transport.(*http.Transport).CloseIdleConnections()
					resp, err := c.Get("http://" + h.addr("egress") + "/x")
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 503 {
						t.Fatalf("status %d, want 503", resp.StatusCode)
					}
					// Counted before the reply: no wait.
					if cluster, host := h.stat("cluster.c.upstream_cx_connect_fail"), hostStat(h, "c", addr, "cx_connect_fail"); cluster == 0 || host != cluster {
						t.Errorf("upstream_cx_connect_fail %d, the host's cx_connect_fail %d; want the same, not 0", cluster, host)
					}
				})
			}
		})
	}
}
