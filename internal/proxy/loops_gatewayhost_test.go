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

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestGatewayHostKeptOnLoops: the translator's resources for an App Mesh
// virtual gateway whose gateway routes keep the request's Host
// (rewrite.hostname.defaultTargetHostname DISABLED), on an HTTP and on
// an HTTP/2 gateway listener, to a virtual service served over HTTP/1.1
// (red) and one over HTTP/2 (blue): the first hop adds
// x-app-mesh-virtual-service naming the service, the gateway's egress
// listener routes on it and removes it. Both hops are served on the
// loops, HTTP/1.1 and h2c, without a connection handed off (they handed
// every request off, and h2c at the preface), and each request reaches
// its service with the Host it was sent with and without the header, as
// on the goroutine path.
func TestGatewayHostKeptOnLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	echo := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name+" ")
			headEcho(w, r)
		})
	}
	red := httptest.NewServer(echo("red"))
	t.Cleanup(red.Close)
	blue, _ := xnetH2CUpstream(t, echo("blue"))
	apps := map[string]netip.AddrPort{"red": netip.MustParseAddrPort(red.Listener.Addr().String()), "blue": netip.MustParseAddrPort(blue)}
	paths := []string{"/red/x?q=1", "/blue/y", "/red/", "/blue/a%2Fb?z"}
	for _, proto := range []string{"http", "http2"} {
		t.Run(proto, func(t *testing.T) {
			push := gatewayHostKeptResources(t, proto, apps)
			got := map[string]map[string]string{}
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					h := newHarness(t, p.on)
					h.push(push...)
					egress := netip.MustParseAddrPort(h.addr("lds_egress_0.0.0.0_15001"))
					h.push(selfRedirectTo(t, push, egress)...)
					ingress, second := h.listener("lds_ingress_0.0.0.0_9080"), h.listener("lds_egress_0.0.0.0_15001")
					if ingress.OnLoops() == p.goroutines || second.OnLoops() == p.goroutines {
						t.Fatalf("the gateway's listeners on the loops: %v, %v", ingress.OnLoops(), second.OnLoops())
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
							req.Header.Set("X-App-Mesh-Virtual-Service", "from-the-client")
							resp, err := c.cl.Do(req)
							if err != nil {
								t.Fatal(err)
							}
							b, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							answers[c.name+" "+path] = fmt.Sprintf("%d %s", resp.StatusCode,
								strings.ReplaceAll(string(b), "Go-http-client/2.0", "Go-http-client/1.1"))
						}
					}
					got[p.name] = answers
					if p.goroutines {
						return
					}
					if p.h2Goroutines {
						return // h2c, and HTTP/1.1 to HTTP/2 clusters, handed off there
					}
					if n, m := ingress.HandedOff(), second.HandedOff(); n != 0 || m != 0 {
						t.Errorf("%d and %d connections handed off, want the loops to serve them all", n, m)
					}
				})
			}
			for name, answers := range got {
				for k, a := range answers {
					if w := got["goroutines"][k]; a != w {
						t.Errorf("%s, %s: the upstream got\n%s\non the goroutine path\n%s", name, k, a, w)
					}
				}
			}
			for k, a := range got["goroutines"] {
				svc := strings.Split(k, "/")[1]
				if !strings.HasPrefix(a, "200 "+svc+" ") || !strings.Contains(a, "host: www.example.com]") ||
					strings.Contains(a, "X-App-Mesh-Virtual-Service") {
					t.Errorf("goroutines, %s: %s; want %s's answer, Host www.example.com, no x-app-mesh-virtual-service", k, a, svc)
				}
			}
		})
	}
}

// gatewayHostKeptResources are the translator's resources for the
// virtual gateway "gw" (a listener of protocol proto on 9080, bound here
// to 127.0.0.1:0) of a mesh whose virtual services red.local and
// blue.local are the virtual nodes red (HTTP) and blue (HTTP/2) at apps;
// its gateway routes /red/ and /blue/ keep the Host (hostname rewrite
// DISABLED).
func gatewayHostKeptResources(t *testing.T, proto string, apps map[string]netip.AddrPort) []types.Resource {
	t.Helper()
	mesh, gw := "m", "gw"
	v := meshView(mesh, nil)
	routeKind := map[string]string{"http": "httpRoute", "http2": "http2Route"}[proto]
	for node, nodeProto := range map[string]string{"red": "http", "blue": "http2"} {
		app := apps[node]
		v.Endpoints[node] = []translate.Endpoint{{IPv4: app.Addr().String(), Port: uint32(app.Port())}}
		ns := &appmesh.VirtualNodeSpec{}
		decodeJSON(t, fmt.Sprintf(`{"listeners":[{"portMapping":{"port":%d,"protocol":%q}}],`+
			`"serviceDiscovery":{"awsCloudMap":{"namespaceName":"local","serviceName":%q}}}`, app.Port(), nodeProto, node), ns)
		v.VirtualNodes[node] = &appmesh.VirtualNodeData{MeshName: &mesh, VirtualNodeName: &node, Spec: ns}
		svc := node + ".local"
		ss := &appmesh.VirtualServiceSpec{}
		decodeJSON(t, fmt.Sprintf(`{"provider":{"virtualNode":{"virtualNodeName":%q}}}`, node), ss)
		v.VirtualServices[svc] = &appmesh.VirtualServiceData{MeshName: &mesh, VirtualServiceName: &svc, Spec: ss}
		gs := &appmesh.GatewayRouteSpec{}
		decodeJSON(t, fmt.Sprintf(`{%q:{"match":{"prefix":"/%s/"},"action":{"target":{"virtualService":{"virtualServiceName":%q}},`+
			`"rewrite":{"hostname":{"defaultTargetHostname":"DISABLED"}}}}}`, routeKind, node, svc), gs)
		name := node
		v.GatewayRoutes[gw] = append(v.GatewayRoutes[gw], &appmesh.GatewayRouteData{MeshName: &mesh, VirtualGatewayName: &gw,
			GatewayRouteName: &name, Spec: gs})
	}
	gs := &appmesh.VirtualGatewaySpec{}
	decodeJSON(t, fmt.Sprintf(`{"listeners":[{"portMapping":{"port":9080,"protocol":%q}}]}`, proto), gs)
	v.VirtualGateways[gw] = &appmesh.VirtualGatewayData{MeshName: &mesh, VirtualGatewayName: &gw, Spec: gs}
	return translatedResources(t, v, translate.Identity{MeshOwner: "111122223333", Mesh: mesh, Kind: appmesh.KindVirtualGateway, Name: gw},
		func(l *listenerv3.Listener) {
			l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}
		})
}
