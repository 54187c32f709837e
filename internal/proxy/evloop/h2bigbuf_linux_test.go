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

// TestH2LargeBodiesReuseBuffers: 100 KiB responses, and 100 KiB request
// bodies, over h2c through a loop, to an HTTP/2 upstream and to an
// HTTP/1.1 one, take the loop's buffers from its free list once the first
// has run. Full-size DATA frames (16,384 bytes and a 9-byte header) do
// not fit a buffer of bufSize: the connections' output buffers grew past
// it on every frame, an HTTP/2 upstream's read buffer was grown to
// 2*bufSize, a body's bytes on their way to an HTTP/1.1 upstream
// overflowed theirs, and putBuf, which kept only buffers of bufSize,
// dropped them all: about six buffers made per response, one per body.
func TestH2LargeBodiesReuseBuffers(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 100<<10)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			_, _ = fmt.Fprint(w, n)
			return
		}
		_, _ = w.Write(big)
	})
	for _, tc := range []struct {
		name       string
		upH2, post bool
	}{{"h2-upstream/GET", true, false}, {"h1-upstream/GET", false, false}, {"h2-upstream/POST", true, true}, {"h1-upstream/POST", false, true}} {
		upH2 := tc.upH2
		t.Run(tc.name, func(t *testing.T) {
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
			rc := routesToA(t)
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
				want := big
				if tc.post {
					resp, err = c.Post("http://"+srv.Addr()+"/", "text/plain", bytes.NewReader(big))
					want = fmt.Append(nil, len(big))
				}
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, want) || resp.ProtoMajor != 2 {
					t.Fatalf("request %d: %d bytes over HTTP/%d, %v; want %d over HTTP/2", i, len(got), resp.ProtoMajor, err, len(want))
				}
			}
			get(0) // the free list starts empty
			made0 := srv.bufsMade.Load()
			const n = 50
			for i := 1; i <= n; i++ {
				get(i)
			}
			made := srv.bufsMade.Load() - made0
			t.Logf("%d buffers made over %d requests (%.2f per request)", made, n, float64(made)/n)
			// A few may still be made: a body's bytes that wait for an
			// HTTP/1.1 upstream's socket can pass bigBufSize (appendBuf).
			if made > n/3 {
				t.Errorf("the loop made %d buffers over %d more requests with %d bytes of body; want most reused (at most %d)", made, n, len(big), n/3)
			}
		})
	}
}

// TestH1FromH2LargeBodiesReuseBuffers: 1 MiB responses from an HTTP/2
// upstream to HTTP/1.1 clients, chunked (the upstream sends no length)
// and with a content-length, four connections at once: once a first
// round has run, the loop makes (almost) no buffer. Each DATA frame's bytes,
// with their chunk's size line, were appended to a buffer of bufSize
// that a full-size frame overflows: grown by append, and then dropped,
// not pooled, about two buffers made per frame (64 per response).
func TestH1FromH2LargeBodiesReuseBuffers(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 1<<20)
	for _, length := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length=%v", length), func(t *testing.T) {
			up := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if length {
					w.Header().Set("Content-Length", fmt.Sprint(len(big)))
				}
				_, _ = w.Write(big)
			}), &http2.Server{})}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = up.Serve(ln) }() // ends with up.Close in Cleanup
			t.Cleanup(func() { _ = up.Close() })
			rc := routesToA(t)
			r := h1UpRouter{h2UpRouter{h2TestRouter: h2TestRouter{&ConfigRouter{Routes: rc,
				Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(ln.Addr().String())}}}}}}
			srv, _ := start(t, Config{Loops: 1, Router: r, H2: true, AcceptHTTP10: true}) // served by the loops: no HandOff
			tr := &http.Transport{MaxIdleConnsPerHost: 4}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr}
			get := func() error {
				resp, err := c.Get("http://" + srv.Addr() + "/")
				if err != nil {
					return err
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, big) || (resp.ContentLength >= 0) != length {
					return fmt.Errorf("%d, %d bytes (content-length %d), %v; want 200 and %d bytes", resp.StatusCode, len(got), resp.ContentLength, err, len(big))
				}
				return nil
			}
			const conns, each = 4, 10
			parallel := func(each int) {
				t.Helper()
				errs := make(chan error, conns)
				for range conns {
					go func() { // ends after its requests
						for range each {
							if err := get(); err != nil {
								errs <- err
								return
							}
						}
						errs <- nil
					}()
				}
				for range conns {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
			}
			parallel(1) // the free list starts empty
			made0 := srv.bufsMade.Load()
			parallel(each)
			made := srv.bufsMade.Load() - made0
			t.Logf("%d buffers made over %d requests", made, conns*each)
			// More requests may be in flight at once than in the first
			// round: their buffers are made, up to 20 under stress.
			// Fewer than one a response; about 54 a response were made
			// before (chunked).
			if made >= conns*each {
				t.Errorf("the loop made %d buffers over %d more requests of %d bytes; want most reused (fewer than one a request)", made, conns*each, len(big))
			}
		})
	}
}
