//go:build linux

package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// howtoGRPCDir is the repository's copy of the App Mesh examples' gRPC
// case: color_client with color_server.howto-grpc.local as its backend,
// served by a virtual router on a gRPC port whose route sends to
// color_server, whose listener is gRPC on 8080.
const howtoGRPCDir = "../../testdata/appmesh-examples/howto-grpc"

// howtoGRPCRoutes are the case's route specs: the plain one (the
// translator's default retry policy) and the one with gRPC retry events
// and a per-retry timeout.
var howtoGRPCRoutes = []string{"route-virtual-router--route.json", "route-retries.json"}

// howtoGRPCView is the case's mesh with the route spec routeFile, and
// color_server's one instance at host:port.
func howtoGRPCView(t testing.TB, routeFile, host string, port uint32) *translate.View {
	t.Helper()
	read := func(name string, into any) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(howtoGRPCDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	mesh := "howto-grpc-mesh"
	v := meshView(mesh, map[string][]translate.Endpoint{"color_server": {{IPv4: host, Port: port}}})
	for _, n := range []string{"color_client", "color_server"} {
		d := &appmesh.VirtualNodeData{}
		read("virtual-node-"+n+".json", d)
		v.VirtualNodes[n] = d
	}
	vr, rt, vs := &appmesh.VirtualRouterData{}, &appmesh.RouteData{}, &appmesh.VirtualServiceData{}
	read("virtual-router-virtual-router.json", vr)
	read(routeFile, rt)
	read("virtual-service-color_server.howto-grpc.local.json", vs)
	v.VirtualRouters["virtual-router"] = vr
	v.Routes["virtual-router"] = []*appmesh.RouteData{rt}
	v.VirtualServices["color_server.howto-grpc.local"] = vs
	return v
}

// sidecarResources is every resource the translator gives the sidecar
// (not a proxyless client) of the virtual node node of v.
func sidecarResources(t testing.TB, v *translate.View, node string) []types.Resource {
	t.Helper()
	return translatedResources(t, v, translate.Identity{MeshOwner: "111122223333", Mesh: *v.Mesh.MeshName, Kind: appmesh.KindVirtualNode, Name: node}, nil)
}

// loopsTakeH2 reports, for the listener name of h, why the loops would
// not serve its HTTP/2 connections: "" when they serve its first HTTP
// chain and its router takes HTTP/2 (loopRouter.H2), whose every route
// the loops forward (loopRoute).
func loopsTakeH2(h *harness, name string) string {
	h.p.mu.Lock()
	l := h.p.listeners[name]
	h.p.mu.Unlock()
	if l == nil {
		return "no listener " + name
	}
	cfg := l.Config()
	if cfg.Loops == nil || len(cfg.Loops.Chains) == 0 || cfg.Loops.Chains[0] == nil {
		return "off the loops"
	}
	var r *loopRouter
	switch x := cfg.Loops.Chains[0].Router.(type) {
	case *loopRouter:
		r = x
	case loggedRouter:
		r = x.loopRouter
	default:
		return fmt.Sprintf("router %T", x)
	}
	rc := r.hcm.RouteConfig()
	if rc == nil {
		return "no route configuration"
	}
	why := ""
	rc.EachVirtualHost(func(vh *route.VirtualHost) bool {
		for _, rt := range vh.Routes {
			if !loopRoute(rc, vh, rt) {
				why += fmt.Sprintf("route %q (timeout %v, max_stream_duration %v, retry %+v) not the loops'; ", rt.Name, rt.Timeout, rt.MaxStreamDuration, rt.Retry)
			}
		}
		return true
	})
	if _, ok := r.H2(); !ok && why == "" {
		why = "H2 refuses the listener"
	}
	return why
}

// TestEvloopAppMeshGRPCRoutes: the listeners the translator gives the
// sidecars of App Mesh's gRPC example (howto-grpc: color_client's
// egress to a gRPC virtual router, color_server's gRPC ingress), with
// its plain route and its route with gRPC retry events and a per-retry
// timeout, are served by the loops, HTTP/2 connections included: every
// route has the route timeout 15 s (App Mesh's default perRequest) and
// no max_stream_duration (only a proxyless gRPC client's routes carry
// one: translate's grpcFlavor), and a retry policy the loops implement.
func TestEvloopAppMeshGRPCRoutes(t *testing.T) {
	for _, rf := range howtoGRPCRoutes {
		for _, c := range []struct{ node, listener string }{
			{"color_client", "lds_egress_0.0.0.0_15001"},
			{"color_server", "lds_ingress_0.0.0.0_15000"},
		} {
			t.Run(rf+"/"+c.node, func(t *testing.T) {
				h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
				h.push(sidecarResources(t, howtoGRPCView(t, rf, "127.0.0.1", 18080), c.node)...)
				if why := loopsTakeH2(h, c.listener); why != "" {
					t.Errorf("%s: the loops do not serve its HTTP/2 connections: %s", c.listener, why)
				}
			})
		}
	}
}

// grpcSidecarChildEnv, set, makes TestEvloopAppMeshGRPCSidecar the half
// that runs inside its network namespace.
const grpcSidecarChildEnv = "WEFT_TEST_GRPC_SIDECAR_NETNS"

// TestEvloopAppMeshGRPCSidecar runs weft proxy as color_client's sidecar
// with the translator's resources for howto-grpc (each route spec),
// behind real iptables REDIRECT rules in a network namespace, on the
// loops and on goroutines: the application's gRPC calls over h2c to
// color_server.howto-grpc.local:8080 reach the gRPC server through the
// egress listener, answered alike both ways, and on the loops the h2c
// connection and its streams to the HTTP/2 upstream are the loops'
// (nothing handed off).
func TestEvloopAppMeshGRPCSidecar(t *testing.T) {
	if os.Getenv(grpcSidecarChildEnv) == "" {
		inSidecarNamespace(t, "TestEvloopAppMeshGRPCSidecar", grpcSidecarChildEnv)
		return
	}
	// color_server's gRPC server stand-in: h2c, a message and grpc-status 0
	// in the trailers.
	ln, err := net.Listen("tcp", sidecarHost+":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(grpcMessage)
		w.Header().Set("Grpc-Status", "0")
	})}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }() // ends with srv.Close in Cleanup
	t.Cleanup(func() { _ = srv.Close() })
	for _, rf := range howtoGRPCRoutes {
		answers := map[bool]string{}
		for _, loops := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s loops=%v", rf, loops), func(t *testing.T) {
				h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = !loops, false })
				h.push(sidecarResources(t, howtoGRPCView(t, rf, sidecarHost, 8080), "color_client")...)
				egress := h.listener("lds_egress_0.0.0.0_15001")
				if egress.OnLoops() != loops {
					t.Fatalf("egress on the loops %v, want %v", egress.OnLoops(), loops)
				}
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(sidecarApp)}, Timeout: 10 * time.Second}
				tr := &http.Transport{DialContext: d.DialContext, Protocols: new(http.Protocols)}
				tr.Protocols.SetUnencryptedHTTP2(true)
				t.Cleanup(tr.CloseIdleConnections)
				c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
				var got string
				for range 3 { // streams of one connection
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					req := grpcRequest(t, ctx, sidecarHost+":8080", "color_server.howto-grpc.local:8080", "/color.ColorService/GetColor")
					resp, err := c.Do(req)
					if err != nil {
						cancel()
						t.Fatalf("gRPC call: %v", err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					cancel()
					got = fmt.Sprintf("%s %d %s %q grpc-status %s", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"), b, resp.Trailer.Get("Grpc-Status"))
				}
				if want := "HTTP/2.0 200 application/grpc " + strconv.Quote(string(grpcMessage)) + " grpc-status 0"; got != want {
					t.Errorf("answered %s, want %s", got, want)
				}
				answers[loops] = got
				if loops && (egress.HandedOff() != 0 || egress.LoopH2Conns() != 1 || egress.LoopH2UpstreamStreams() != 3) {
					t.Errorf("egress: %d connections handed off, %d h2c connections and %d streams to HTTP/2 upstreams on the loops; want 0, 1, 3",
						egress.HandedOff(), egress.LoopH2Conns(), egress.LoopH2UpstreamStreams())
				}
				if n := h.stat("cluster.cds_egress_howto-grpc-mesh_color_server_grpc_8080.upstream_rq_200"); n != 3 {
					t.Errorf("upstream_rq_200 = %d, want 3", n)
				}
			})
		}
		if answers[true] != answers[false] {
			t.Errorf("%s: the loops answered %s, the goroutine path %s", rf, answers[true], answers[false])
		}
	}
}

// BenchmarkH2CGRPCAppMeshRoute measures a unary gRPC-shaped call (a
// POST of a 3-byte message with te: trailers, answered with one message
// and grpc-status 0 in the trailers) over h2c through the translator's
// egress connection manager, route (howto-grpc's, timeout 15 s, the
// default retry policy) and HTTP/2 cluster for color_client, to an h2c
// server: the egress's connection manager on a listener of its own (the
// translator's listener needs REDIRECT: TestEvloopAppMeshGRPCSidecar).
// On the loops by default; WEFT_PROXY_TEST_H2LOOPS=0 hands the h2c
// connections to the goroutine path, WEFT_PROXY_TEST_EVLOOP=0 serves the
// listener there.
func BenchmarkH2CGRPCAppMeshRoute(b *testing.B) {
	up := h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(grpcMessage)
		w.Header().Set("Grpc-Status", "0")
	}))
	ap, err := netip.ParseAddrPort(up)
	if err != nil {
		b.Fatal(err)
	}
	host, port := ap.Addr().String(), uint32(ap.Port())
	rs := sidecarResources(b, howtoGRPCView(b, howtoGRPCRoutes[0], host, port), "color_client")
	var push []types.Resource
	for _, r := range rs {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			push = append(push, r)
			continue
		}
		if l.GetName() != "lds_egress_0.0.0.0_15001" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			m := &hcmv3.HttpConnectionManager{}
			if fs := fc.GetFilters(); len(fs) == 1 && fs[0].GetTypedConfig().UnmarshalTo(m) == nil {
				push = append(push, httpListener("egress", m))
				break
			}
		}
	}
	h := newHarness(b)
	h.push(push...)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	addr := h.addr("egress")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", "http://"+addr+"/color.ColorService/GetColor", bytes.NewReader(grpcMessage))
			req.Host = "color_server.howto-grpc.local:8080"
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.Trailer.Get("Grpc-Status") != "0" {
				b.Errorf("HTTP/%d %d, grpc-status %q: want HTTP/2 200, 0", resp.ProtoMajor, resp.StatusCode, resp.Trailer.Get("Grpc-Status"))
				return
			}
		}
	})
	b.StopTimer()
	if l := h.listener("egress"); l.OnLoops() && os.Getenv("WEFT_PROXY_TEST_H2LOOPS") != "0" && (l.LoopH2Conns() == 0 || l.HandedOff() != 0) {
		b.Errorf("%d h2c connections on the loops, %d handed off: want the loops to serve them", l.LoopH2Conns(), l.HandedOff())
	}
}
