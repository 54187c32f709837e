package httpconn

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestGoneWatch: the watch for a client gone (h1gone.go), over TCP and
// TLS, ends the connection's context with errClientGone when the client
// closes; a byte the client sends meanwhile (a pipelined request) ends
// the watch without it and stays for the next read, as does a TLS record;
// stopGone ends a watch that saw nothing, and the connection reads on.
func TestGoneWatch(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		name := "tcp"
		if overTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			open := func(t *testing.T) (*h1Conn, net.Conn, context.Context) {
				srv, cl := tcpPair(t)
				if overTLS {
					srv, cl = tlsPair(t, srv, cl)
				}
				hc := newH1Conn(&listener.Conn{Conn: srv})
				ctx, cancel := context.WithCancelCause(context.Background())
				hc.leave = cancel
				return hc, cl, ctx
			}
			t.Run("close", func(t *testing.T) {
				hc, cl, ctx := open(t)
				hc.armGone(nil)
				hc.startGone()
				_ = cl.Close()
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the client's close went unnoticed")
				}
				if !errors.Is(context.Cause(ctx), errClientGone) {
					t.Fatalf("the connection's context ended with %v, want errClientGone", context.Cause(ctx))
				}
				hc.stopGone()
			})
			t.Run("pipelined", func(t *testing.T) {
				hc, cl, ctx := open(t)
				hc.armGone(nil)
				hc.startGone()
				if _, err := io.WriteString(cl, "GET /next HTTP/1.1\r\n"); err != nil {
					t.Fatal(err)
				}
				waitUntilWatchEnds(t, hc)
				hc.stopGone()
				if ctx.Err() != nil {
					t.Fatalf("a pipelined byte ended the context: %v", context.Cause(ctx))
				}
				_ = hc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, len("GET /next HTTP/1.1\r\n"))
				if _, err := io.ReadFull(hc.br, b); err != nil || string(b) != "GET /next HTTP/1.1\r\n" {
					t.Fatalf("read %q, %v after the watch; want the pipelined bytes", b, err)
				}
			})
			t.Run("stop", func(t *testing.T) {
				hc, cl, ctx := open(t)
				hc.armGone(nil)
				hc.startGone()
				hc.stopGone() // in its read or before it: either way it ends

				if ctx.Err() != nil {
					t.Fatalf("stopping the watch ended the context: %v", context.Cause(ctx))
				}
				if _, err := io.WriteString(cl, "x"); err != nil {
					t.Fatal(err)
				}
				if b, err := hc.br.Peek(1); err != nil || b[0] != 'x' {
					t.Fatalf("after the stop the connection read %q, %v; want x", b, err)
				}
			})
		})
	}
}

// waitUntilWatchEnds waits for a running watcher to return on its own.
func waitUntilWatchEnds(t *testing.T, hc *h1Conn) {
	t.Helper()
	select {
	case <-hc.goneDone:
		hc.goneDone <- struct{}{} // for stopGone
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end")
	}
}

// tlsPair makes srv and cl the two ends of a TLS connection.
func tlsPair(t *testing.T, srv, cl net.Conn) (*tls.Conn, *tls.Conn) {
	t.Helper()
	ca := tlstest.NewCA(t, "gone")
	ts := tls.Server(srv, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"x"}).TLS(t)}})
	tc := tls.Client(cl, &tls.Config{RootCAs: ca.Pool(), ServerName: "x"})
	done := make(chan error, 1)
	go func() { done <- ts.Handshake() }() // ends with the handshake
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return ts, tc
}

// TestGoneStopRacesStart: stopGone on the handler's goroutine while the
// stream's timer starts a connection's first watch: stopGone waits for
// that watcher, and never on a channel the starter has not made yet (it
// waited for good, the handler with it; -race tells the unordered write).
func TestGoneStopRacesStart(t *testing.T) {
	for i := 0; i < 200; i++ {
		srv, _ := tcpPair(t)
		hc := newH1Conn(&listener.Conn{Conn: srv})
		_, cancel := context.WithCancelCause(context.Background())
		hc.leave = cancel
		hc.armGone(nil)
		go hc.startGone() // ends at once
		for hc.goneState.Load() == goneArmed {
			runtime.Gosched()
		}
		stopped := make(chan struct{})
		go func() { hc.stopGone(); close(stopped) }() // ends when the watch does
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: stopGone did not return", i)
		}
		cancel(nil)
	}
}

// TestRouteTimerEndsWithStream: a route timer fire that started the
// watch as the stream ended (serve's deferred Stop already run) re-arms
// the timer for the rest of the route timeout; the stream's end stops it
// again, so that it does not hold the stream (its request, its writer)
// until then.
func TestRouteTimerEndsWithStream(t *testing.T) {
	w := &watchRecorder{}
	s := &stream{w: w, in: &http.Request{ProtoMajor: 1}, rt: &route.Route{Timeout: time.Hour}}
	s.rtTimer = time.AfterFunc(time.Hour, s.routeFired)
	s.rtTimer.Stop() // serve's deferred Stop, before its deferred ended
	s.routeFired()   // the fire at watchAfter, running then
	if w.started != 1 {
		t.Fatalf("the fire started %d watches; want 1", w.started)
	}
	s.ended()
	if s.rtTimer.Stop() {
		t.Fatal("the route timer was still armed after the stream ended")
	}
}

// watchRecorder is a response writer that counts the watches started.
type watchRecorder struct {
	http.ResponseWriter
	started int
}

func (w *watchRecorder) watchGone() { w.started++ }

// TestWatchWaitsForRequestEnd: an HTTP/1.1 request whose body is still
// coming when its timers are armed starts no watch for a client gone
// (nor its route timeout) until the body's end (requestComplete), then
// one at watchAfter, with or without a route timeout; with one, the
// timer runs on for the rest of it. The route timer and the watch share
// armRoute, which both the head (timers) and the body's end arm.
func TestWatchWaitsForRequestEnd(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Hour} {
		t.Run(timeout.String(), func(t *testing.T) {
			w := &watchRecorder{}
			s := &stream{w: w, rt: &route.Route{Timeout: timeout}, in: &http.Request{
				ProtoMajor: 1, Body: io.NopCloser(http.NoBody), ContentLength: 10}}
			started := func() int {
				s.abortMu.Lock() // watchClient runs under it
				defer s.abortMu.Unlock()
				return w.started
			}
			ts := (&HCM{}).timers(s)
			defer func() {
				for _, t := range ts {
					t.Stop()
				}
				s.ended()
			}()
			time.Sleep(watchAfter + 200*time.Millisecond)
			if n := started(); n != 0 {
				t.Fatalf("%d watches started while the body was coming; want none", n)
			}
			s.requestComplete()
			deadline := time.Now().Add(watchAfter + 3*time.Second)
			for started() == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := started(); n != 1 {
				t.Fatalf("%d watches started after the body's end; want 1", n)
			}
			if timeout > 0 {
				s.abortMu.Lock()
				rt := s.rtTimer
				s.abortMu.Unlock()
				if rt == nil || !rt.Stop() {
					t.Fatal("the route timer is not armed for the rest of the route timeout after the watch started")
				}
			}
		})
	}
}
