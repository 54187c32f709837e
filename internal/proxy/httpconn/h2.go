package httpconn

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// h2c connections (prior knowledge, or h2 after TLS) are served by
// golang.org/x/net/http2, one connection per ServeConn call on the
// goroutine that accepted it. Each connection has an http2.Server of its
// own, tied to an http.Server whose Shutdown makes that one connection
// send GOAWAY: how a draining connection (its listener removed or its
// filter chain changed) stops taking streams while those in flight
// finish. net/http's own HTTP/2 server can only do that for all of its
// connections at once.

// h2Conn is one HTTP/2 connection being served.
type h2Conn struct {
	c  *listener.Conn
	hs *http.Server // Shutdown sends GOAWAY
}

// goAway starts a graceful close: GOAWAY, the streams in flight finish,
// then the connection closes. It does not block.
func (hc *h2Conn) goAway() {
	// With no listener and no connection of its own, Shutdown returns at
	// once after starting the shutdown hook (http2's GOAWAY) on a
	// goroutine of net/http's.
	_ = hc.hs.Shutdown(context.Background())
}

// serveH2 serves an HTTP/2 connection until it ends; c's first bytes are
// the client preface.
func (s *Server) serveH2(ctx context.Context, c *listener.Conn, m *HCM) {
	resets := &resetTracker{}
	// Its reads tell a client's close from the proxy's (clientLeft).
	// Wrapped first: once tracked, or with the close below armed, other
	// goroutines read c.Conn (shutdown's close, drain).
	c.Conn = &h2EndConn{Conn: c.Conn, t: resets}
	hc := &h2Conn{c: c, hs: &http.Server{
		// x/net's server advertises and enforces MaxHeaderBytes plus 32
		// bytes for each of 10 fields as SETTINGS_MAX_HEADER_LIST_SIZE:
		// route.Limits.H2ListSize, with max_headers_count fields.
		MaxHeaderBytes: int(m.limits.H2ListSize()) - 10*32,
		ErrorLog:       log.New(slogWriter{s.log}, "", 0),
	}}
	// net/http's server runs at most MaxConcurrentStreams handlers per
	// connection and queues a few more; a client opening streams beyond
	// the queue gets ENHANCE_YOUR_CALM.
	// Its windows are the loops' (H2Windows): x/net's server, as the
	// loops, credits a stream's and the connection's window only as the
	// handler reads the body, so MaxUploadBufferPerConnection bounds what
	// a client connection makes it hold, and above the stream's it keeps
	// one stream whose upstream takes nothing from stalling the others.
	win := m.H2Windows()
	h2s := &http2.Server{MaxConcurrentStreams: m.h2MaxStreams, IdleTimeout: m.idleTimeout,
		MaxUploadBufferPerStream: int32(win.Stream), MaxUploadBufferPerConnection: int32(win.Conn)}
	if err := http2.ConfigureServer(hc.hs, h2s); err != nil {
		s.log.Debug("http2 server", "err", err)
		_ = c.Close()
		return
	}
	if !s.trackH2(hc) {
		_ = c.Close()
		return
	}
	defer s.untrackH2(hc)
	if !c.CountedCx { // else counted by the loops that handed it off
		m.stats.cxTotal.Inc()
	}
	m.stats.cxHTTP2.Inc()
	m.stats.cxActive.Inc()
	defer func() {
		m.stats.cxActive.Dec()
		m.stats.cxDestroy.Inc()
	}()
	c.OnDrain(hc.goAway)
	// Shutdown's last step (cancelBase) closes what is left.
	stop := context.AfterFunc(s.base, func() { _ = c.Close() })
	defer stop()
	cctx := context.WithValue(s.base, connKey{}, c)
	cctx = context.WithValue(cctx, resetKey{}, resets)
	h2s.ServeConn(h2SchemeConn{c}, &http2.ServeConnOpts{Context: cctx, BaseConfig: hc.hs, Handler: http.HandlerFunc(s.serveHTTP)})
	if c.Draining() {
		m.stats.cxDrainClose.Inc()
	}
	_ = c.Close()
}

// h2SchemeConn is an HTTP/2 connection as x/net's server is given it:
// one whose requests carry TLS exactly when the client's :scheme was
// https, over TLS or not. x/net's server hands its handler no :scheme,
// but sets a request's TLS to the connection's state when its :scheme is
// https (newWriterAndRequestNoBody), for a connection with a
// ConnectionState method; it has no other use for that state than to
// refuse a TLS version below 1.2 or a cipher suite RFC 7540 prohibits,
// which the listener's TLS decides instead (the state given passes
// both). serve writes the request's :scheme in its URL (requestScheme),
// where the routes, the upstream and the access log read it, and clears
// TLS.
type h2SchemeConn struct{ *listener.Conn }

// ConnectionState is a TLS 1.3 state of nothing else: x/net's server
// reads it once, as the connection starts.
func (h2SchemeConn) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
}

// Envoy's premature-reset heuristic against HTTP/2 rapid reset
// (CVE-2023-44487), with its runtime defaults: a stream reset by the
// client within prematureResetLifetime of its start is premature; once
// prematureResetTotal streams of a connection have ended, the connection
// is closed when at least half of them were premature, and before that
// as soon as prematureResetTotal/2 were.
const (
	prematureResetLifetime = time.Second // overload.premature_reset_min_stream_lifetime_seconds
	prematureResetTotal    = 500         // overload.premature_reset_total_stream_count
	// goAwayGrace is how long a connection closed for premature resets
	// has to finish after its GOAWAY before it is closed regardless.
	goAwayGrace = 2 * time.Second
)

type resetKey struct{}

// resetTracker counts one HTTP/2 connection's ended and prematurely reset
// streams. Its handlers update it concurrently.
type resetTracker struct {
	ended, premature atomic.Int64
	tripped          atomic.Bool // the connection is being closed
	// readEnded: a read of the connection failed, its client gone
	// (peerGone: an end of input or a reset) or the connection closed
	// by the proxy. x/net reads the connection on a goroutine of its own
	// and cancels the streams' contexts after its read failed.
	readEnded, peerGone atomic.Bool
}

// h2EndConn is an HTTP/2 connection as x/net's server reads it: it notes
// how the reads end in its resetTracker.
type h2EndConn struct {
	net.Conn
	t *resetTracker
}

func (c *h2EndConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !isTimeout(err) {
		if !errors.Is(err, net.ErrClosed) {
			c.t.peerGone.Store(true)
		}
		c.t.readEnded.Store(true)
	}
	return n, err
}

func resetTrackerFrom(ctx context.Context) *resetTracker {
	t, _ := ctx.Value(resetKey{}).(*resetTracker)
	return t
}

// streamEnded records a stream's end; it reports true once, for the
// stream whose end makes the connection one to close.
func (t *resetTracker) streamEnded(premature bool) bool {
	ended := t.ended.Add(1)
	if !premature {
		return false
	}
	p := t.premature.Add(1)
	return TooManyPrematureResets(ended, p) && t.tripped.CompareAndSwap(false, true)
}

// TooManyPrematureResets is the heuristic's verdict for a connection
// whose streams ended ended times, premature of them reset prematurely;
// PrematureResetLifetime is how young a reset stream is premature. The
// loops' HTTP/2 connections apply it too.
func TooManyPrematureResets(ended, premature int64) bool {
	if ended < prematureResetTotal {
		return premature*2 >= prematureResetTotal
	}
	return premature*2 >= ended
}

// PrematureResetLifetime: see TooManyPrematureResets.
const PrematureResetLifetime = prematureResetLifetime

// closeForResets makes the connection send GOAWAY and close: net/http's
// HTTP/2 server starts a graceful shutdown of a connection when a
// response carries "Connection: close" (the header is not sent). w's
// response must not have been written yet. The connection is closed
// after goAwayGrace in any case.
func closeForResets(w http.ResponseWriter, c *listener.Conn) {
	w.Header().Set("Connection", "close")
	time.AfterFunc(goAwayGrace, func() { _ = c.Close() }) // one-shot; the connection may be gone already
}
