package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestGatewayRoutesOnLoops: the translator's resources for an App Mesh
// virtual gateway whose gateway routes rewrite (as
// howto-match-and-rewrite-at-ingress: a prefix match, rewritten to "/"
// by default, the Host to the target virtual service's name; one with
// the prefix rewrite DISABLED; one with a rewrite to /tell/) put the
// gateway's listener on the loops, which serve its requests, HTTP/1.1
// and h2c, without handing any off (they handed every one off, and
// refused h2c at the preface), and the upstream gets what it gets on the
// goroutine path.
func TestGatewayRoutesOnLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	app := httptest.NewServer(http.HandlerFunc(headEcho))
	t.Cleanup(app.Close)
	push := gatewayResources(t, netip.MustParseAddrPort(app.Listener.Addr().String()))
	paths := []string{"/red/x?q=1", "/red/a%2Fb", "/kept/y", "/tell/z?w"}
	got := map[string]map[string]string{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(push...)
			// The first hop's routes go to the gateway's own egress
			// listener (the self-redirect cluster), bound here where the
			// test chose.
			egress := netip.MustParseAddrPort(h.addr("lds_egress_0.0.0.0_15001"))
			h.push(selfRedirectTo(t, push, egress)...)
			l := h.listener("lds_ingress_0.0.0.0_9080")
			if l.OnLoops() == p.goroutines {
				t.Fatalf("the gateway's listener on the loops: %v", l.OnLoops())
			}
			addr := h.addr("lds_ingress_0.0.0.0_9080")
			answers := map[string]string{}
			for _, c := range []struct {
				name string
				cl   *http.Client
			}{{"h1", newClient(t)}, {"h2c", h2cClient(t)}} {
				for _, path := range paths {
					req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Host = "www.example.com"
					resp, err := c.cl.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answers[c.name+" "+path] = fmt.Sprintf("%d %s", resp.StatusCode, strings.ReplaceAll(string(b), "Go-http-client/2.0", "Go-http-client/1.1"))
				}
			}
			got[p.name] = answers
			if !p.goroutines && l.HandedOff() != 0 && !p.h2Goroutines {
				t.Errorf("%d connections handed off, want the loops to serve them all", l.HandedOff())
			}
			if !p.goroutines && p.h2Goroutines && l.HandedOff() != 1 {
				t.Errorf("%d connections handed off, want 1 (the h2c one)", l.HandedOff())
			}
		})
	}
	want := map[string]string{
		"h1 /red/x?q=1":  "200 HTTP/1.1 GET /x?q=1 [Accept-Encoding: gzip; User-Agent: Go-http-client/1.1; X-Envoy-Original-Path: /red/x?q=1; X-Forwarded-Proto: http; X-Request-Id; host: red.local]",
		"h2c /red/a%2Fb": "200 HTTP/1.1 GET /a%2Fb [Accept-Encoding: gzip; User-Agent: Go-http-client/1.1; X-Envoy-Original-Path: /red/a%2Fb; X-Forwarded-Proto: http; X-Request-Id; host: red.local]",
		"h1 /kept/y":     "200 HTTP/1.1 GET /kept/y [Accept-Encoding: gzip; User-Agent: Go-http-client/1.1; X-Forwarded-Proto: http; X-Request-Id; host: red.local]",
		"h2c /tell/z?w":  "200 HTTP/1.1 GET /tell/z?w [Accept-Encoding: gzip; User-Agent: Go-http-client/1.1; X-Envoy-Original-Path: /tell/z?w; X-Forwarded-Proto: http; X-Request-Id; host: red.local]",
	}
	for k, w := range want {
		if g := got["goroutines"][k]; g != w {
			t.Errorf("goroutines, %s: the upstream got\n%s\nwant\n%s", k, g, w)
		}
	}
	for name, answers := range got {
		for k, a := range answers {
			if w := got["goroutines"][k]; a != w {
				t.Errorf("%s, %s: the upstream got\n%s\non the goroutine path\n%s", name, k, a, w)
			}
		}
	}
}

// gatewayResources are the translator's resources for the virtual
// gateway "gw" (an HTTP listener on 9080, bound here to 127.0.0.1:0) of
// a mesh whose virtual service red.local is the virtual node red's, at
// app; its gateway routes are /red/ (App Mesh's defaults: the prefix
// rewritten to "/", the Host to red.local), /kept/ (the prefix rewrite
// DISABLED) and /tell/ (rewritten to /tell/, which changes nothing but
// still counts as a rewrite for App Mesh).
func gatewayResources(t *testing.T, app netip.AddrPort) []types.Resource {
	t.Helper()
	mesh, gw, node, svc := "m", "gw", "red", "red.local"
	v := meshView(mesh, map[string][]translate.Endpoint{node: {{IPv4: app.Addr().String(), Port: uint32(app.Port())}}})
	ns := &appmesh.VirtualNodeSpec{}
	decodeJSON(t, fmt.Sprintf(`{"listeners":[{"portMapping":{"port":%d,"protocol":"http"}}],`+
		`"serviceDiscovery":{"awsCloudMap":{"namespaceName":"local","serviceName":"red"}}}`, app.Port()), ns)
	v.VirtualNodes[node] = &appmesh.VirtualNodeData{MeshName: &mesh, VirtualNodeName: &node, Spec: ns}
	ss := &appmesh.VirtualServiceSpec{}
	decodeJSON(t, `{"provider":{"virtualNode":{"virtualNodeName":"red"}}}`, ss)
	v.VirtualServices[svc] = &appmesh.VirtualServiceData{MeshName: &mesh, VirtualServiceName: &svc, Spec: ss}
	gs := &appmesh.VirtualGatewaySpec{}
	decodeJSON(t, `{"listeners":[{"portMapping":{"port":9080,"protocol":"http"}}]}`, gs)
	v.VirtualGateways[gw] = &appmesh.VirtualGatewayData{MeshName: &mesh, VirtualGatewayName: &gw, Spec: gs}
	for name, spec := range map[string]string{
		"red":  `{"httpRoute":{"match":{"prefix":"/red/"},"action":{"target":{"virtualService":{"virtualServiceName":"red.local"}}}}}`,
		"kept": `{"httpRoute":{"match":{"prefix":"/kept/"},"action":{"target":{"virtualService":{"virtualServiceName":"red.local"}},"rewrite":{"prefix":{"defaultPrefix":"DISABLED"}}}}}`,
		"tell": `{"httpRoute":{"match":{"prefix":"/tell/"},"action":{"target":{"virtualService":{"virtualServiceName":"red.local"}},"rewrite":{"prefix":{"value":"/tell/"}}}}}`,
	} {
		gs := &appmesh.GatewayRouteSpec{}
		decodeJSON(t, spec, gs)
		v.GatewayRoutes[gw] = append(v.GatewayRoutes[gw], &appmesh.GatewayRouteData{MeshName: &mesh, VirtualGatewayName: &gw,
			GatewayRouteName: &name, Spec: gs})
	}
	return translatedResources(t, v, translate.Identity{MeshOwner: "111122223333", Mesh: mesh, Kind: appmesh.KindVirtualGateway, Name: gw},
		func(l *listenerv3.Listener) {
			l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}
		})
}

// selfRedirectTo is push with the gateway's self-redirect cluster sent
// to addr.
func selfRedirectTo(t *testing.T, push []types.Resource, addr netip.AddrPort) []types.Resource {
	t.Helper()
	out := make([]types.Resource, len(push))
	found := false
	for i, r := range push {
		out[i] = r
		c, ok := r.(*clusterv3.Cluster)
		if !ok || !strings.Contains(c.Name, "self_redirect") {
			continue
		}
		c = proto.Clone(c).(*clusterv3.Cluster)
		c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier =
			&corev3.SocketAddress_PortValue{PortValue: uint32(addr.Port())}
		out[i], found = c, true
	}
	if !found {
		t.Fatal("no self-redirect cluster")
	}
	return out
}
