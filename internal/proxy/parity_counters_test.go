package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestConnectionCountersSamePaths: every path counts a connection once
// in its connection manager's stats (downstream_cx_total, _active,
// _destroy) and by its protocol (downstream_cx_http1_total,
// downstream_cx_http2_total), Envoy's per-connection counters: the loops
// counted neither protocol, and a connection they handed to the goroutine
// path (at an h2c preface, or at a request whose route they do not
// serve, over TLS too) was counted on both sides.
func TestConnectionCountersSamePaths(t *testing.T) {
	b := newBackend(t, "b")
	ca := tlstest.NewCA(t, "mesh")
	files := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	rw := func() types.Resource {
		r := routeTo("/rw/", "c")
		// The goroutine path's: the loops hand the connection off.
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "1"}}}
		r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added-response", Value: "1"}}}
		return routeConfig("rds", vhost("v", []string{"*"}, r, routeTo("/", "c")))
	}
	for _, tc := range []struct {
		name string
		tls  bool
		// routes; with a header-adding route, the loops hand h2c off at the
		// preface, and an HTTP/1.1 connection at its request to /rw/.
		routes types.Resource
		// The HTTP/1.1 connection's requests, then (plaintext) the h2c
		// connection's.
		h1, h2 []string
		// handed is how many connections the loops hand off, with h2c
		// handed off and on the loops.
		handed [2]int64
	}{
		{"plaintext, all on the loops", false, routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
			[]string{"/a", "/b"}, []string{"/a", "/b"}, [2]int64{1, 0}},
		{"plaintext, handed off", false, rw(), []string{"/a", "/b", "/rw/y", "/c"}, []string{"/a"}, [2]int64{2, 2}},
		{"plaintext, handed off at the first request", false, rw(), []string{"/rw/y", "/c"}, nil, [2]int64{1, 1}},
		{"TLS, handed off", true, rw(), []string{"/a", "/rw/y", "/c"}, nil, [2]int64{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					h := newHarness(t, p.on)
					lst := httpListener("egress", httpManager("egress", "rds"))
					scheme := "http"
					tr := &http.Transport{}
					if tc.tls {
						lst = strictListener("egress", &tlsv3.DownstreamTlsContext{CommonTlsContext: files.common(false)})
						scheme, tr.TLSClientConfig = "https", clientTLS(ca, "svc.local")
					}
					h.push(lst, tc.routes, edsCluster("c"), cla("c", b.addr()))
					base := scheme + "://" + h.addr("egress")
					h1 := &http.Client{Transport: tr, Timeout: 10 * time.Second}
					h2 := h2cClient(t)
					t.Cleanup(tr.CloseIdleConnections)
					for _, path := range tc.h1 {
						if code, _ := getOn(t, h1, base+path); code != 200 {
							t.Fatalf("HTTP/1.1 %s: %d", path, code)
						}
					}
					for _, path := range tc.h2 {
						if code, _ := getOn(t, h2, base+path); code != 200 {
							t.Fatalf("h2c %s: %d", path, code)
						}
					}
					conns, h2conns := int64(1), int64(0)
					if len(tc.h2) > 0 {
						conns, h2conns = 2, 1
					}
					open := map[string]int64{
						"http.egress.downstream_cx_total": conns, "http.egress.downstream_cx_http1_total": 1,
						"http.egress.downstream_cx_http2_total": h2conns, "http.egress.downstream_cx_active": conns,
						"http.egress.downstream_cx_destroy":        0,
						"listener.127.0.0.1_0.downstream_cx_total": conns, "listener.127.0.0.1_0.downstream_cx_active": conns,
					}
					if tc.tls {
						open["listener.127.0.0.1_0.ssl.handshake"] = 1
					}
					waitStats(t, h, open)
					if !p.goroutines {
						want := tc.handed[0]
						if !p.h2Goroutines {
							want = tc.handed[1]
						}
						if n := h.listener("egress").HandedOff(); n != want {
							t.Errorf("the loops handed off %d connections, want %d", n, want)
						}
					}
					tr.CloseIdleConnections()
					h2.Transport.(*http.Transport).CloseIdleConnections()
					closed := map[string]int64{
						"http.egress.downstream_cx_total": conns, "http.egress.downstream_cx_active": 0,
						"http.egress.downstream_cx_destroy":          conns,
						"listener.127.0.0.1_0.downstream_cx_destroy": conns, "listener.127.0.0.1_0.downstream_cx_active": 0,
					}
					waitStats(t, h, closed)
				})
			}
		})
	}
}

// TestMalformedFirstRequestCountedSamePaths: a connection whose first
// request head is malformed (answered 400, then closed) is an HTTP/1.1
// connection on every path: the goroutine path counts one once its
// first bytes are not the h2c preface.
func TestMalformedFirstRequestCountedSamePaths(t *testing.T) {
	b := newBackend(t, "b")
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c"), cla("c", b.addr()))
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost x\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 400 {
				t.Fatalf("answered %v, %v; want 400", resp, err)
			}
			waitStats(t, h, map[string]int64{"http.egress.downstream_cx_total": 1, "http.egress.downstream_cx_http1_total": 1,
				"http.egress.downstream_cx_http2_total": 0, "http.egress.downstream_cx_destroy": 1})
		})
	}
}
