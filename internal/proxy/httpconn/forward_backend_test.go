package httpconn

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fwdBackend is the upstream of the forwarding tests: each path one
// behaviour.
type fwdBackend struct {
	ln      net.Listener
	srv     *http.Server
	mu      sync.Mutex
	tries   map[string]int // by X-Try-Key
	sseRead chan struct{}  // the client read the first event
}

func startFwdBackend(t *testing.T) *fwdBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fwdBackend{ln: ln, tries: map[string]int{}, sseRead: make(chan struct{}, 1)}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ErrorLog: log.New(io.Discard, "", 0)}
	// HTTP/1.1, and h2c for clusters that speak HTTP/2 upstream.
	b.srv.Protocols = new(http.Protocols)
	b.srv.Protocols.SetHTTP1(true)
	b.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = b.srv.Serve(ln) }() // ends when Close in Cleanup closes ln
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// received lists what reached the backend, minus what differs between
// any two requests (the generated request ID).
func received(r *http.Request, body string) string {
	var keys []string
	for k := range r.Header {
		if k != "X-Request-Id" && k != "X-Try-Key" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s %s host=%s cl=%d te=%v close=%v\n", r.Method, r.URL.RequestURI(), r.Proto, r.Host, r.ContentLength, r.TransferEncoding, r.Close)
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s: %q\n", k, r.Header[k])
	}
	fmt.Fprintf(&sb, "body %q\n", body)
	return sb.String()
}

func (b *fwdBackend) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo", "/hop":
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hop" {
			w.Header().Set("Connection", "X-Conn-Listed")
			w.Header().Set("X-Conn-Listed", "1")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("Proxy-Authenticate", "Basic")
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, received(r, string(body)))
	case "/head":
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
	case "/chunked":
		for i := range 3 {
			fmt.Fprintf(w, "part %d\n", i)
			_ = http.NewResponseController(w).Flush()
		}
	case "/trailers":
		w.Header().Set("Trailer", "X-Sum, X-Count")
		_, _ = io.WriteString(w, "body with trailers")
		w.Header().Set("X-Sum", "abc")
		w.Header().Set("X-Count", "2")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	case "/early":
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "after early hints")
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Content-Length", "32") // a length: only the type says flush
		_, _ = io.WriteString(w, "data: 1\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-b.sseRead:
			_, _ = io.WriteString(w, "data: 2\n\n")
		case <-time.After(5 * time.Second):
			_, _ = io.WriteString(w, "data: unflushed\n\n")
		}
		_, _ = io.WriteString(w, strings.Repeat(".", 32-18))
	case "/cut":
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "only ten b")
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	case "/cutchunked":
		_, _ = io.WriteString(w, "some chunk")
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	case "/reset":
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = c.Close()
		}
	case "/slow":
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	case "/flaky":
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		key := r.Header.Get("X-Try-Key")
		b.tries[key]++
		n := b.tries[key]
		b.mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "try %d body %q", n, body)
	case "/ws":
		if r.Header.Get("Upgrade") != "websocket" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upgraded: yes\r\n\r\n")
		line, _ := brw.ReadString('\n')
		_, _ = io.WriteString(c, "echo "+line)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}
