package evloop

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// TestH2LightenKeepsConnState: the Framer (and streams map and header
// buffer) a loop's idle HTTP/2 connection gets anew at the sweep
// (lightenH2) leaves what the connection's life needs: each side's HPACK
// dynamic table (the decoder of h2Heads, the encoder hpackEnc), the
// Framer's settings (header list and frame sizes) and the windows. An
// x/net client and upstream, whose encoders index the fields they repeat,
// exchange requests with a header of 2 KiB and responses of 20 KiB (every
// connection heavy) on one connection each, idle across several sweeps
// between requests; each request's fields, referred to by dynamic table
// index from the second on, reach the upstream, and each response's reach
// the client. A connection whose decoder or encoder state was renewed with
// its Framer would fail with COMPRESSION_ERROR, or pass wrong fields.
func TestH2LightenKeepsConnState(t *testing.T) {
	every := poolSweepEvery
	t.Cleanup(func() { poolSweepEvery = every }) // after start's cleanup stopped the loop
	poolSweepEvery = 2 * time.Millisecond
	big := string(bytes.Repeat([]byte("k"), 2<<10))
	body := bytes.Repeat([]byte("b"), 20<<10)
	var upConns atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("x-big"); got != big {
			http.Error(w, "x-big of "+strconv.Itoa(len(got))+" bytes", http.StatusBadRequest)
			return
		}
		w.Header().Set("x-echo", r.Header.Get("x-n"))
		w.Header().Set("x-resp-big", big)
		_, _ = w.Write(body)
	})
	up := &http.Server{Handler: h2c.NewHandler(handler, &http2.Server{}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				upConns.Add(1)
			}
		}}
	t.Cleanup(func() { _ = up.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(ln) }() // ends with up.Close in Cleanup
	rc := routesToA(t)
	r := h2UpRouter{h2TestRouter: h2TestRouter{&ConfigRouter{Routes: rc,
		Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(ln.Addr().String())}}}}}
	srv, _ := start(t, Config{Loops: 1, Router: r, H2: true})
	var dials atomic.Int32
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 6 {
		req, _ := http.NewRequest("POST", "http://"+srv.Addr()+"/", bytes.NewReader(body))
		req.Header.Set("x-big", big)
		req.Header.Set("x-n", "n"+strconv.Itoa(i%2)) // indexed, then referred to
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(got) != len(body) {
			t.Fatalf("request %d: %d, %d bytes (%q...), %v; want 200 and %d bytes", i, resp.StatusCode, len(got), got[:min(len(got), 40)], err, len(body))
		}
		if e, rb := resp.Header.Get("x-echo"), resp.Header.Get("x-resp-big"); e != "n"+strconv.Itoa(i%2) || rb != big {
			t.Fatalf("request %d: x-echo %q and an x-resp-big of %d bytes; want %q and %d bytes", i, e, len(rb), "n"+strconv.Itoa(i%2), len(big))
		}
		time.Sleep(30 * time.Millisecond) // idle across sweeps
	}
	if d, u := dials.Load(), upConns.Load(); d != 1 || u != 1 {
		t.Errorf("%d client connections and %d upstream connections; want one each (the state kept across sweeps)", d, u)
	}
}
