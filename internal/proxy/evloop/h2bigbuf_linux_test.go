package evloop

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestH2LargeResponsesReuseBuffers: 100 KiB responses over h2c through a
// loop, from an HTTP/2 upstream and from an HTTP/1.1 one, take the
// loop's buffers from its free list once the first has run. Full-size
// DATA frames (16,384 bytes and a 9-byte header) do not fit a buffer of
// bufSize: the connections' output buffers grew past it on every frame,
// and an HTTP/2 upstream's read buffer was grown to 2*bufSize, and
// putBuf, which kept only buffers of bufSize, dropped them all: about six
// buffers made per response.
func TestH2LargeResponsesReuseBuffers(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 100<<10)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) })
	for _, upH2 := range []bool{true, false} {
		name := "h1-upstream"
		if upH2 {
			name = "h2-upstream"
		}
		t.Run(name, func(t *testing.T) {
			up := &http.Server{Handler: handler}
			if upH2 {
				up.Handler = h2c.NewHandler(handler, &http2.Server{})
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = up.Serve(ln) }() // ends with up.Close in Cleanup
			t.Cleanup(func() { _ = up.Close() })
			rc, err := proxyroute.Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{
				{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{{Name: "a",
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"}}}}}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			var r Router = h2TestRouter{&ConfigRouter{Routes: rc,
				Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(ln.Addr().String())}}}}
			if upH2 {
				r = h2UpRouter{h2TestRouter: r.(h2TestRouter)}
			}
			srv, _ := start(t, Config{Loops: 1, Router: r, H2: true})
			tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr}
			get := func(i int) {
				t.Helper()
				resp, err := c.Get("http://" + srv.Addr() + "/")
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != int64(len(big)) || resp.ProtoMajor != 2 {
					t.Fatalf("request %d: %d bytes over HTTP/%d, %v; want %d over HTTP/2", i, n, resp.ProtoMajor, err, len(big))
				}
			}
			get(0) // the free list starts empty
			made0 := srv.bufsMade.Load()
			const n = 50
			for i := 1; i <= n; i++ {
				get(i)
			}
			made := srv.bufsMade.Load() - made0
			t.Logf("%d buffers made over %d responses of %d bytes (%.2f per response)", made, n, len(big), float64(made)/n)
			if made > 4 {
				t.Errorf("the loop made %d buffers over %d more responses of %d bytes; want them reused (at most 4)", made, n, len(big))
			}
		})
	}
}
