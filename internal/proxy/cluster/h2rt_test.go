package cluster

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2RTKnowsXNetErrors: the errors h2RT tells apart by their text
// (x/net's, unexported) are still worded as h2RT expects: a connection
// closed before its first stream (errNotEstablished), one that takes no
// new stream (errUnusable), and a stream a GOAWAY left out (errGoAway;
// errGoAwayFirst for the connection's first stream and a GOAWAY with an
// error code), which Refused takes for a refused stream. Should x/net
// reword one, h2RT would send a REFUSED-like request to the route's
// retry policy instead of another connection, the route would see a
// refused stream as a connection termination, or a dead connection would
// be kept: this fails first.
func TestH2RTKnowsXNetErrors(t *testing.T) {
	tr := &http2.Transport{AllowHTTP: true}
	dial := func(addr string) *http2.ClientConn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := tr.NewClientConn(nc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	send := func(cc *http2.ClientConn) error {
		req, _ := http.NewRequest("GET", "http://x/", nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	check := func(name string, err error, want string, refused bool) {
		// Exact: h2RT and Refused compare the first three whole, and the
		// fourth's code is part of want.
		if err == nil || err.Error() != want {
			t.Errorf("%s: x/net said %v; h2RT expects %q", name, err, want)
		} else if Refused(err) != refused {
			t.Errorf("%s: Refused(%v) = %v; want %v", name, err, !refused, refused)
		}
	}
	addr := goAwayServer(t, http2.ErrCodeNo)
	closed := dial(addr)
	_ = closed.Close()
	check("closed before its first stream", send(closed), errNotEstablished, false)
	reused := dial(addr)
	reused.SetDoNotReuse()
	check("taking no new stream", send(reused), errUnusable, false)
	check("left out by a GOAWAY", send(dial(addr)), errGoAway, true)
	check("the first stream left out by a GOAWAY with an error code",
		send(dial(goAwayServer(t, http2.ErrCodeInternal))), errGoAwayFirst+"INTERNAL_ERROR", true)
}

// goAwayServer serves HTTP/2 on loopback until the test ends: each stream
// is answered with a GOAWAY with code whose last-stream-id leaves it out.
func goAwayServer(t *testing.T, code http2.ErrCode) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	// Ends when ln closes.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Ends when the client closes c.
			go goAwayFirstStream(c, code)
		}
	}()
	return ln.Addr().String()
}

// goAwayFirstStream serves HTTP/2 on c: each stream is answered with a
// GOAWAY (code) whose last-stream-id leaves it out.
func goAwayFirstStream(c net.Conn, code http2.ErrCode) {
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if fr.WriteSettings() != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && fr.WriteSettingsAck() != nil {
				return
			}
		case *http2.HeadersFrame:
			if fr.WriteGoAway(0, code, nil) != nil {
				return
			}
		}
	}
}

// TestH2RTUnusableBodyAgain: a request whose connection could take no
// stream after it was picked (drained, closed, going away) goes on
// another connection with its body had again from GetBody, as x/net's
// shouldRetryRequest had it: x/net closed the body it was given, and
// httpconn's replay hands out a fresh one so that its next attempt waits
// for the right one to close.
func TestH2RTUnusableBodyAgain(t *testing.T) {
	addr, _ := h2Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	}))
	c := h2Cluster(t, addr, 1024, 1024)
	rt, _ := c.Transport(2)
	send := func(ctx context.Context, gets *atomic.Int32) (string, error) {
		req, _ := http.NewRequestWithContext(WithHost(ctx, c.Hosts()[0]), "POST", "http://"+addr+"/", strings.NewReader("hello"))
		if gets != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				gets.Add(1)
				return io.NopCloser(strings.NewReader("hello")), nil
			}
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := send(ctx, nil); err != nil { // a pooled connection to pick
		t.Fatal(err)
	}
	// The pool is drained as the request gets its connection: that one
	// takes no new stream when the request goes out on it.
	var drained atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if drained.CompareAndSwap(false, true) {
			c.h2pool.drain(nil, nil)
		}
	}}
	var gets atomic.Int32
	got, err := send(httptrace.WithClientTrace(ctx, trace), &gets)
	if err != nil || got != "hello" {
		t.Fatalf("answered %q, %v; want the body echoed", got, err)
	}
	if gets.Load() != 1 {
		t.Errorf("GetBody called %d times; want 1 (the body of the connection that took no stream was closed)", gets.Load())
	}
}
