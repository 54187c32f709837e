package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// h2Answer is what a client sees of a response: status, grpc-status and
// grpc-message (from the head or the trailers) and body.
type h2Answer struct {
	status      int
	grpcStatus  string
	grpcMessage string
	body        string
}

// h2Get sends a GET over h2c to the listener "egress" of a proxy set up by
// setup, on the loops or on the goroutine path, and returns the answer.
func h2Get(t *testing.T, goroutines bool, setup func(*harness), path string, grpc bool) (h2Answer, *harness) {
	t.Helper()
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = goroutines, goroutines })
	setup(h)
	a, _ := h2Do(t, h2cClient(t), "http://"+h.addr("egress")+path, grpc)
	return a, h
}

// h2Do sends a GET (a gRPC request: a POST) over c, which must speak
// HTTP/2, and returns the answer and the connection it went on.
func h2Do(t *testing.T, c *http.Client, url string, grpc bool) (h2Answer, net.Conn) {
	t.Helper()
	var conn net.Conn
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conn = i.Conn }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	if grpc {
		req.Method = http.MethodPost
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", resp.ProtoMajor)
	}
	gs, gm := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	if gs == "" {
		gs, gm = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	}
	return h2Answer{resp.StatusCode, gs, gm, string(b)}, conn
}

// TestH2LoopsNoHealthyUpstream: an HTTP/2 stream to a cluster with no
// healthy host is answered on the loops as on the goroutine path: 503 "no
// healthy upstream" (a gRPC request: grpc-status 14, UNAVAILABLE, which
// gRPC clients may retry). The loops answered 501 (a gRPC client saw 2,
// UNKNOWN), because they cannot hand an HTTP/2 stream over.
func TestH2LoopsNoHealthyUpstream(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	setup := func(h *harness) {
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "none"))),
			edsCluster("none"), cla("none"))
	}
	for _, grpc := range []bool{false, true} {
		want, _ := h2Get(t, true, setup, "/x", grpc)
		got, h := h2Get(t, false, setup, "/x", grpc)
		if got != want {
			t.Errorf("gRPC %v: the loops answered %+v, the goroutine path %+v", grpc, got, want)
		}
		if !grpc && (want.status != 503 || !strings.Contains(want.body, "no healthy upstream")) || grpc && want.grpcStatus != "14" {
			t.Errorf("gRPC %v: the goroutine path answered %+v", grpc, want)
		}
		if l := h.listener("egress"); l.LoopH2Conns() != 1 || l.HandedOff() != 0 {
			t.Errorf("gRPC %v: the loops served %d h2c connections and handed off %d, want 1 and 0", grpc, l.LoopH2Conns(), l.HandedOff())
		}
	}
}

// TestH2LoopsNormalizedPath: with merge_slashes and normalize_path (weft
// sets both on every App Mesh listener), an HTTP/2 stream whose path they
// change is routed by the normalised path and sends it upstream, on the
// loops as on the goroutine path, to an HTTP/1.1 cluster and to an HTTP/2
// one, the query kept. The loops answered 501: they cannot hand an
// HTTP/2 stream over to the goroutine path, which normalises.
func TestH2LoopsNormalizedPath(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.RequestURI()) })
	h1 := httptest.NewServer(echo)
	t.Cleanup(h1.Close)
	h2 := h2cUpstream(t, echo)
	for name, mod := range map[string]func(*clusterv3.Cluster){
		"HTTP/1.1 cluster": nil,
		"HTTP/2 cluster":   func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} },
	} {
		addr := strings.TrimPrefix(h1.URL, "http://")
		if mod != nil {
			addr = h2
		}
		setup := func(h *harness) {
			var mods []func(*clusterv3.Cluster)
			if mod != nil {
				mods = append(mods, mod)
			}
			h.push(httpListener("egress", httpManager("egress", "rds", func(m *hcmv3.HttpConnectionManager) {
				m.MergeSlashes, m.NormalizePath = true, wrapperspb.Bool(true)
			})),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/a/b", "c"))),
				edsCluster("c", mods...), cla("c", addr))
		}
		for path, upstream := range map[string]string{"//a//b?q=1": "/a/b?q=1", "/x/../a/./b/c": "/a/b/c"} {
			want, _ := h2Get(t, true, setup, path, false)
			got, h := h2Get(t, false, setup, path, false)
			if got != want {
				t.Errorf("%s, %s: the loops answered %+v, the goroutine path %+v", name, path, got, want)
			}
			if want.status != 200 || want.body != upstream {
				t.Errorf("%s, %s: the goroutine path answered %+v, want 200 and the upstream seeing %s", name, path, want, upstream)
			}
			if l := h.listener("egress"); l.LoopH2Conns() != 1 || l.HandedOff() != 0 {
				t.Errorf("%s, %s: the loops served %d h2c connections and handed off %d, want 1 and 0", name, path, l.LoopH2Conns(), l.HandedOff())
			}
		}
	}
}

// TestH2ClusterGoneMidConnection: a client keeps one h2c connection open
// through the proxy; a request on it is served, then an update removes
// the route's cluster, or every endpoint of it, and the next streams on
// the same connection are answered 503 (a gRPC request: grpc-status 14,
// UNAVAILABLE), with the same body, response flags, details and counters
// on every path: the goroutine path with the loops off (--evloop=false),
// the goroutine path the loops hand h2c connections to (--h2loops=false),
// and the loops, which cannot hand a stream over once the connection is
// theirs and answer it themselves (loopRouter.route); to an HTTP/1.1
// cluster and to an HTTP/2 one. The removed endpoint's idle upstream
// connection is closed on every path.
func TestH2ClusterGoneMidConnection(t *testing.T) {
	paths := proxyPaths()
	h1 := newBackend(t, "c")
	h2, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "h2") }))
	// Fields of the access log that do not vary between runs.
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQ(:METHOD)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER% %PROTOCOL%\n"}}
	for _, up := range []struct {
		name string
		addr string
		mods []func(*clusterv3.Cluster)
	}{
		{"HTTP/1.1 cluster", h1.addr(), nil},
		{"HTTP/2 cluster", h2, []func(*clusterv3.Cluster){h2Upstream}},
	} {
		for _, tc := range []struct {
			name string
			// after is what the update leaves of cluster c.
			after []types.Resource
			// want is the answer to a GET and to a gRPC call after the
			// update, logged their access log lines.
			want   [2]h2Answer
			logged [2]string
			// stats are the counters whose values differ between the
			// cases.
			stats map[string]int64
		}{
			{"cluster removed", nil,
				[2]h2Answer{{status: 503}, {status: 200, grpcStatus: "14"}},
				[2]string{"GET 503 NC cluster_not_found - HTTP/2", "POST 200 NC cluster_not_found - HTTP/2"},
				// The removed cluster's hosts' idle connections are
				// closed too, as Envoy drains a removed cluster's pools.
				map[string]int64{"http.egress.no_cluster": 2, "cluster.c.upstream_cx_none_healthy": 0, "cluster.c.upstream_cx_active": 0}},
			{"endpoints removed", []types.Resource{edsCluster("c", up.mods...), cla("c")},
				[2]h2Answer{{status: 503, body: "no healthy upstream"}, {status: 200, grpcStatus: "14", grpcMessage: "no healthy upstream"}},
				[2]string{"GET 503 UH no_healthy_upstream c HTTP/2", "POST 200 UH no_healthy_upstream c HTTP/2"},
				// The removed host's idle connection is closed, as Envoy
				// drains a removed host's pools, on every path (the
				// loops kept it until their pool's sweep).
				map[string]int64{"http.egress.no_cluster": 0, "cluster.c.upstream_cx_none_healthy": 2, "cluster.c.upstream_cx_active": 0}},
		} {
			t.Run(up.name+", "+tc.name, func(t *testing.T) {
				for _, p := range paths {
					t.Run(p.name, func(t *testing.T) {
						h := newHarness(t, p.logged)
						logFile := filepath.Join(t.TempDir(), "access.log")
						// Every push holds another cluster, so that the
						// proxy ACKs CDS and EDS even when c is gone.
						keep := []types.Resource{httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format))),
							routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("other"), cla("other", h1.addr())}
						h.push(slices.Concat(keep, []types.Resource{edsCluster("c", up.mods...), cla("c", up.addr)})...)
						c := h2cClient(t)
						url := "http://" + h.addr("egress") + "/x"
						a, conn := h2Do(t, c, url, false)
						if a.status != 200 || conn == nil {
							t.Fatalf("before the update: %+v, connection %v", a, conn)
						}
						h.push(slices.Concat(keep, tc.after)...)
						for i, grpc := range []bool{false, true} {
							a, cn := h2Do(t, c, url, grpc)
							if a != tc.want[i] {
								t.Errorf("after the update, gRPC %v: answered %+v, want %+v", grpc, a, tc.want[i])
							}
							if cn != conn {
								t.Errorf("after the update, gRPC %v: sent on another connection", grpc)
							}
						}
						want := map[string]int64{
							"http.egress.downstream_rq_total": 3, "http.egress.downstream_rq_http2_total": 3,
							"http.egress.downstream_rq_completed": 3, "http.egress.downstream_rq_2xx": 2,
							"http.egress.downstream_rq_5xx": 1, "cluster.c.upstream_rq_total": 1,
						}
						for k, v := range tc.stats {
							want[k] = v
						}
						waitStats(t, h, want)
						var lines []string
						waitUntil(t, 5*time.Second, "3 access log lines", func() bool {
							b, _ := os.ReadFile(logFile)
							lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
							return len(lines) == 3
						})
						if got := [2]string(lines[1:]); got != tc.logged {
							t.Errorf("access log after the update:\n%s\nwant\n%s", strings.Join(got[:], "\n"), strings.Join(tc.logged[:], "\n"))
						}
						if !p.goroutines {
							wantOn, wantHanded := int64(1), int64(0)
							if p.h2Goroutines {
								wantOn, wantHanded = 0, 1
							}
							l := h.listener("egress")
							if n, handed := l.LoopH2Conns(), l.HandedOff(); n != wantOn || handed != wantHanded {
								t.Errorf("the loops served %d h2c connections and handed off %d, want %d and %d", n, handed, wantOn, wantHanded)
							}
						}
					})
				}
			})
		}
	}
}

// waitStats waits until every counter in want has its value, and fails
// the test with the counters that differ if they do not within 5 s.
func waitStats(t *testing.T, h *harness, want map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var diff []string
		for name, v := range want {
			if got := h.stat(name); got != v {
				diff = append(diff, fmt.Sprintf("%s = %d, want %d", name, got, v))
			}
		}
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(diff)
			t.Errorf("counters:\n%s", strings.Join(diff, "\n"))
			return
		}
		time.Sleep(2 * time.Millisecond) // the goroutine path counts after the response is sent
	}
}
