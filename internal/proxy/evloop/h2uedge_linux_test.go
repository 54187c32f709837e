package evloop

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2UpstreamHeaderListLimit: the proxy tells the upstream its
// SETTINGS_MAX_HEADER_LIST_SIZE, and a response whose fields decode past
// it is answered 502 (the upstream's protocol error,
// route.UpstreamProtocolError*), not relayed cut short; the
// upstream's stream is reset and its connection serves the next stream.
func TestH2UpstreamHeaderListLimit(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	u := accept()
	var limit uint32
	u.until(func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		if ok {
			limit, _ = s.Value(http2.SettingMaxHeaderListSize)
		}
		return ok
	})
	if limit != h2UpMaxHeaderList {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d, want %d", limit, h2UpMaxHeaderList)
	}
	id := u.request().StreamID
	// 100 fields of 1 KB: HPACK indexes the repeated field, so the block
	// is small and its list (~103 KB) over the limit.
	fields := []string{":status", "200"}
	big := strings.Repeat("v", 1000)
	for range 100 {
		fields = append(fields, "x-big", big)
	}
	u.headers(id, true, fields...)
	f := h.until(func(f http2.Frame) bool { return isHeaders(f) || isRST(f) })
	m, ok := f.(*http2.MetaHeadersFrame)
	if !ok || m.PseudoValue("status") != "502" || len(m.Fields) > 10 {
		t.Fatalf("client got %v, want a 502", f)
	}
	if r := u.until(isRST); r == nil || r.(*http2.RSTStreamFrame).StreamID != id {
		t.Fatalf("upstream got %v, want RST_STREAM on %d", r, id)
	}
	h.headers(3, true)
	u.headers(u.request().StreamID, true, ":status", "204")
	if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "204" {
		t.Fatalf("next stream: %v", f)
	}
}

// TestH2UpstreamIdleStreamFrames: HEADERS or DATA from the upstream on a
// stream the proxy never opened is a connection error (RFC 9113 5.1):
// the connection is closed with nothing sent on it first (no GOAWAY, as
// Envoy's codec client closes without flushing), and the client's
// stream is answered 502, as Envoy answers a stream reset for the
// upstream's protocol error.
func TestH2UpstreamIdleStreamFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(u *rawUp, id uint32)
	}{
		{"HEADERS on a stream not opened yet", func(u *rawUp, id uint32) { u.headers(id+2, true, ":status", "200") }},
		{"DATA on an even stream", func(u *rawUp, id uint32) { _ = u.fr.WriteData(2, true, []byte("x")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, accept := startH2Up(t)
			h := dialH2Raw(t, srv, http2.ClientPreface)
			h.headers(1, true)
			u := accept()
			tc.send(u, u.request().StreamID)
			if g := u.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }); g != nil {
				t.Fatalf("upstream got %v, want the close alone", g)
			}
			if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "502" {
				t.Fatalf("client got %v, want 502", f)
			}
		})
	}
}

// TestH2Expect100: a request with "expect: 100-continue" and a body to
// come is answered 100 by the proxy once it went upstream, and its
// expect field is not forwarded (as Envoy without proxy_100_continue);
// the final response follows.
func TestH2Expect100(t *testing.T) {
	t.Run("HTTP/2 upstream", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, false, ":path", "/post", "expect", "100-continue", "content-length", "4")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "100" ||
			f.(*http2.MetaHeadersFrame).StreamEnded() {
			t.Fatalf("client got %v, want a 100 first", f)
		}
		_ = h.fr.WriteData(1, true, []byte("body"))
		u := accept()
		req := u.request()
		for _, hf := range req.Fields {
			if hf.Name == "expect" {
				t.Errorf("upstream got %s: %s", hf.Name, hf.Value)
			}
		}
		u.until(func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamEnded() })
		u.headers(req.StreamID, true, ":status", "201")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "201" {
			t.Fatalf("client got %v, want 201", f)
		}
	})
	t.Run("HTTP/1.1 upstream", func(t *testing.T) {
		srv := startH2(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, false, ":path", "/post", "expect", "100-continue", "content-length", "4")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "100" {
			t.Fatalf("client got %v, want a 100 first", f)
		}
		_ = h.fr.WriteData(1, true, []byte("body"))
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "200" {
			t.Fatalf("client got %v, want 200", f)
		}
	})
	t.Run("no body", func(t *testing.T) {
		srv := startH2(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, true, "expect", "100-continue")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "200" {
			t.Fatalf("client got %v, want 200 and no 100", f)
		}
	})
}

// TestH2UpstreamIdleTimeout: an HTTP/2 upstream connection without a
// stream for the cluster's idle timeout is closed (GOAWAY NO_ERROR), and
// the next stream opens a new one; within it, the connection is reused.
func TestH2UpstreamIdleTimeout(t *testing.T) {
	srv, accept := startH2Up(t, func(c *Config) {
		r := c.Router.(h2UpRouter)
		r.idle = 300 * time.Millisecond
		c.Router = r
	})
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	u := accept()
	u.headers(u.request().StreamID, true, ":status", "200")
	h.until(isHeaders)
	h.headers(3, true) // at once: the same connection
	u.headers(u.request().StreamID, true, ":status", "200")
	h.until(isHeaders)
	time.Sleep(500 * time.Millisecond) // past the idle timeout
	h.headers(5, true)
	g := u.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if g == nil || g.(*http2.GoAwayFrame).ErrCode != http2.ErrCodeNo {
		t.Fatalf("idle upstream connection got %v, want GOAWAY NO_ERROR", g)
	}
	if f := u.until(func(http2.Frame) bool { return false }); f != nil {
		t.Fatal("unreachable")
	}
	u2 := accept()
	u2.headers(u2.request().StreamID, true, ":status", "204")
	if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "204" {
		t.Fatalf("stream 5: %v", f)
	}
}

// TestH2UpstreamInterim: an HTTP/2 upstream's 1xx responses (100
// Continue, 103 Early Hints) are dropped, any number of them, as Envoy
// drops them without proxy_100_continue (and the goroutine path): the
// client gets the final response alone.
func TestH2UpstreamInterim(t *testing.T) {
	t.Run("dropped", func(t *testing.T) {
		h, u, id := openH2Up(t)
		u.headers(id, false, ":status", "100")
		u.headers(id, false, ":status", "103", "link", "</a.css>; rel=preload", "connection", "close")
		u.headers(id, true, ":status", "200")
		var got []string
		h.until(func(f http2.Frame) bool {
			m, ok := f.(*http2.MetaHeadersFrame)
			if ok {
				s := m.PseudoValue("status")
				for _, hf := range m.RegularFields() {
					if hf.Name == "link" || hf.Name == "connection" {
						s += " " + hf.Name + "=" + hf.Value
					}
				}
				got = append(got, s)
			}
			return ok && m.StreamEnded()
		})
		if strings.Join(got, ",") != "200" {
			t.Fatalf("client got %q, want the 200 alone", got)
		}
	})
	t.Run("many", func(t *testing.T) {
		h, u, id := openH2Up(t)
		for range 20 {
			u.headers(id, false, ":status", "103")
		}
		u.headers(id, true, ":status", "204")
		var got []string
		h.until(func(f http2.Frame) bool {
			m, ok := f.(*http2.MetaHeadersFrame)
			if ok {
				got = append(got, m.PseudoValue("status"))
			}
			d, data := f.(*http2.DataFrame)
			return ok && m.StreamEnded() || data && d.StreamEnded() || isRST(f)
		})
		if strings.Join(got, ",") != "204" {
			t.Fatalf("client got %q, want the 204 alone", got)
		}
	})
}

// TestH2InterimFromHTTP1: an HTTP/1.1 upstream's 103 is dropped before
// an h2 client too, as Envoy drops it without proxy_100_continue.
func TestH2InterimFromHTTP1(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(app.Close)
	srv := startH2To(t, hostOf(app))
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	var got []string
	h.until(func(f http2.Frame) bool {
		if m, ok := f.(*http2.MetaHeadersFrame); ok {
			s := m.PseudoValue("status")
			for _, hf := range m.RegularFields() {
				if hf.Name == "link" {
					s += " link=" + hf.Value
				}
			}
			got = append(got, s)
		}
		d, ok := f.(*http2.DataFrame)
		return ok && d.StreamEnded()
	})
	if strings.Join(got, ",") != "200" {
		t.Fatalf("client got %q, want the 200 alone", got)
	}
}
