package evloop

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// TestH2UpstreamIdleHoldsNoBuffers: an HTTP/2 upstream connection of a
// loop gives its output buffer back to the loop's free list once its
// frames are written, as a client connection does, so that connections
// left idle hold none: requests sent one after another to hosts (a
// connection each) take the buffers the last one gave back, GETs and
// POSTs of 20 KiB (whose DATA frames grow the output buffer to
// bigBufSize) alike. The connections kept the buffer their dial took
// (and a grown one) until they closed: a buffer made per new connection.
func TestH2UpstreamIdleHoldsNoBuffers(t *testing.T) {
	const hosts = 32
	body := bytes.Repeat([]byte("b"), 20<<10)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = fmt.Fprint(w, n)
	})
	up := &http.Server{Handler: h2c.NewHandler(handler, &http2.Server{})}
	t.Cleanup(func() { _ = up.Close() })
	var addrs []netip.AddrPort
	for range hosts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, netip.MustParseAddrPort(ln.Addr().String()))
		go func() { _ = up.Serve(ln) }() // ends with up.Close in Cleanup
	}
	rc := routesToA(t)
	for _, post := range []bool{false, true} {
		t.Run(map[bool]string{false: "GET", true: "POST"}[post], func(t *testing.T) {
			r := h2UpRouter{h2TestRouter: h2TestRouter{&ConfigRouter{Routes: rc, Hosts: map[string][]netip.AddrPort{"a": addrs}}}}
			srv, _ := start(t, Config{Loops: 1, Router: r, H2: true})
			tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr}
			send := func(i int) {
				t.Helper()
				var b []byte
				if post {
					b = body
				}
				resp, err := c.Post("http://"+srv.Addr()+"/", "text/plain", bytes.NewReader(b))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := fmt.Sprint(len(b)); err != nil || string(got) != want {
					t.Fatalf("request %d: %q, %v; want %q", i, got, err, want)
				}
			}
			send(0) // the free lists start empty
			made0 := srv.bufsMade.Load()
			for i := 1; i < hosts; i++ {
				send(i) // a new connection each, to the next host
			}
			made := srv.bufsMade.Load() - made0
			t.Logf("%d buffers made over %d requests on new connections", made, hosts-1)
			if made > hosts/8 {
				t.Errorf("the loop made %d buffers over %d requests, each on a new HTTP/2 upstream connection left idle; want those the last gave back reused (at most %d)",
					made, hosts-1, hosts/8)
			}
		})
	}
}
