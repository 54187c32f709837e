package evloop

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// startH2UpRetry is startH2Up with a retry policy on the route.
func startH2UpRetry(t *testing.T, retry *proxyroute.RetryPolicy, mod ...func(*Config)) (srv *Server, accept func(settings ...http2.Setting) *rawUp) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 8)
	var mu sync.Mutex
	var all []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range all {
			c.Close()
		}
	})
	go func() { // ends when ln closes, in the cleanup above
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			all = append(all, c)
			mu.Unlock()
			conns <- c
		}
	}()
	rc := routesToA(t)
	r := h2UpRouter{h2TestRouter: h2TestRouter{&ConfigRouter{Routes: rc,
		Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(ln.Addr().String())}}}}, retry: retry}
	cfg := Config{Loops: 1, Router: r, H2: true}
	for _, m := range mod {
		m(&cfg)
	}
	srv, _ = start(t, cfg)
	return srv, func(settings ...http2.Setting) *rawUp {
		t.Helper()
		var c net.Conn
		select {
		case c = <-conns:
		case <-time.After(10 * time.Second):
			t.Fatal("the proxy did not connect upstream")
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		pre := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, pre); err != nil || string(pre) != http2.ClientPreface {
			t.Fatalf("upstream preface %q: %v", pre, err)
		}
		u := &rawUp{t: t, c: c, fr: http2.NewFramer(c, c)}
		u.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		u.enc = hpack.NewEncoder(&u.hbuf)
		_ = u.fr.WriteSettings(settings...)
		return u
	}
}

// TestH2UpstreamRetries: with a retry policy, a stream the upstream
// refused by GOAWAY, one it reset and a 503 response are sent again
// (body and trailers too) on the upstream's next stream or connection;
// the client sees only the last answer.
func TestH2UpstreamRetries(t *testing.T) {
	policy := &proxyroute.RetryPolicy{On: proxyroute.OnRefusedStream | proxyroute.OnReset | proxyroute.On5xx, NumRetries: 3}
	srv, accept := startH2UpRetry(t, policy)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/post")
	_ = h.fr.WriteData(1, false, []byte("body"))
	h.hbuf.Reset()
	_ = h.enc.WriteField(hpack.HeaderField{Name: "x-t", Value: "1"})
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	u := accept()
	// request reads a whole request: HEADERS, DATA, trailers.
	whole := func(u *rawUp) (id uint32, body string, trailer string) {
		t.Helper()
		id = u.request().StreamID
		for {
			f := u.until(func(f http2.Frame) bool {
				return isHeaders(f) || func() bool { _, ok := f.(*http2.DataFrame); return ok }()
			})
			switch f := f.(type) {
			case *http2.DataFrame:
				body += string(f.Data())
			case *http2.MetaHeadersFrame:
				return id, body, f.Fields[0].Name + "=" + f.Fields[0].Value
			case nil:
				t.Fatal("upstream closed")
			}
		}
	}
	id, body, tr := whole(u)
	if body != "body" || tr != "x-t=1" {
		t.Fatalf("first attempt: body %q trailer %q", body, tr)
	}
	_ = u.fr.WriteRSTStream(id, http2.ErrCodeInternal) // reset: retried
	id, body, tr = whole(u)
	if body != "body" || tr != "x-t=1" {
		t.Fatalf("after the reset: body %q trailer %q", body, tr)
	}
	u.headers(id, true, ":status", "503") // retried
	_, _, _ = whole(u)
	_ = u.fr.WriteGoAway(0, http2.ErrCodeNo, nil) // refused: retried on a new connection
	u2 := accept()
	id, body, tr = whole(u2)
	if body != "body" || tr != "x-t=1" {
		t.Fatalf("after GOAWAY: body %q trailer %q", body, tr)
	}
	u2.headers(id, true, ":status", "200")
	f := h.until(func(f http2.Frame) bool { return isHeaders(f) || isRST(f) })
	if m, ok := f.(*http2.MetaHeadersFrame); !ok || m.PseudoValue("status") != "200" {
		t.Fatalf("client got %v, want 200", f)
	}
}

// TestH2UpstreamPerTryTimeout: an attempt the upstream does not answer
// within the policy's per-try timeout is reset (CANCEL) and retried; the
// last one's timeout is answered 504.
func TestH2UpstreamPerTryTimeout(t *testing.T) {
	policy := &proxyroute.RetryPolicy{On: proxyroute.OnReset, NumRetries: 1, PerTryTimeout: 200 * time.Millisecond}
	srv, accept := startH2UpRetry(t, policy)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	u := accept()
	first := u.request().StreamID
	if f := u.until(isRST); f == nil || f.(*http2.RSTStreamFrame).StreamID != first || f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeCancel {
		t.Fatalf("upstream got %v, want RST_STREAM CANCEL on the first attempt", f)
	}
	second := u.request().StreamID
	if second == first {
		t.Fatal("no second attempt")
	}
	f := h.until(isHeaders)
	if f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "504" {
		t.Fatalf("client got %v, want 504", f)
	}
}
