package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// h2Answer is what a client sees of a response: status, grpc-status
// (from the head or the trailers) and body.
type h2Answer struct {
	status     int
	grpcStatus string
	body       string
}

// h2Get sends a GET over h2c to the listener "egress" of a proxy set up by
// setup, on the loops or on the goroutine path, and returns the answer.
func h2Get(t *testing.T, goroutines bool, setup func(*harness), path string, grpc bool) (h2Answer, *harness) {
	t.Helper()
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = goroutines, goroutines })
	setup(h)
	req, _ := http.NewRequest(http.MethodGet, "http://"+h.addr("egress")+path, nil)
	if grpc {
		req.Method = http.MethodPost
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
	}
	resp, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", resp.ProtoMajor)
	}
	gs := resp.Header.Get("Grpc-Status")
	if gs == "" {
		gs = resp.Trailer.Get("Grpc-Status")
	}
	return h2Answer{resp.StatusCode, gs, string(b)}, h
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
