package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// tcpUpstream listens on a loopback port for the test's life and serves
// each connection it accepts on a goroutine of its own, closing it when
// serve returns; it returns the address.
func tcpUpstream(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // ends when Cleanup closes ln
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // ends when serve returns
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// rawHTTP1Upstream answers every request it reads with resp, as is.
func rawHTTP1Upstream(t *testing.T, resp string) string {
	t.Helper()
	return h1Upstream(t, func(c net.Conn, _ *http.Request, _ []byte) bool {
		_, err := io.WriteString(c, resp)
		return err == nil
	})
}

// h1Answer writes the answer to one request an h1Upstream read, whose
// body it read whole; false closes the connection (the answer is the
// last, or writing it failed).
type h1Answer func(c net.Conn, req *http.Request, body []byte) bool

// h1Upstream is an HTTP/1.1 upstream written by hand, on a loopback port
// closed at the test's end: on each connection it reads requests one
// after another, each with its whole body, and lets answer write what
// the test wants the proxy to get, byte for byte. A connection closes
// when answer returns false or a request cannot be read (the proxy
// closed it).
func h1Upstream(t *testing.T, answer h1Answer) string {
	t.Helper()
	return h1UpstreamWithin(t, 0, answer)
}

// h1UpstreamWithin is h1Upstream whose connections each close at the
// latest deadline after they were accepted (no limit if 0), whatever
// the proxy does.
func h1UpstreamWithin(t *testing.T, deadline time.Duration, answer h1Answer) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection, answer ends it, or at the deadline
		if deadline > 0 {
			_ = c.SetDeadline(time.Now().Add(deadline))
		}
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			if !answer(c, req, body) {
				return
			}
		}
	})
}

// h1Exchange writes each request of send in turn on a connection of its
// own to addr, reads the answer to each and hands it to check with its
// index and body; with closes, it then expects the connection to close.
// It returns the answers as the parity tests compare them, one line each
// ("<proto> <wireHead>, close <bool>"), and "then <error>" for the
// close. An answer that cannot be read fails the test at once, a
// connection left open after the answers fails it; what names the
// exchange in both.
func h1Exchange(t *testing.T, addr, what string, send []string, closes bool, check func(i int, resp *http.Response, body []byte)) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var answer []string
	for i, req := range send {
		_, _ = io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, _ := io.ReadAll(resp.Body)
		answer = append(answer, fmt.Sprintf("%s %s, close %v", resp.Proto, wireHead(resp, body, false), resp.Close))
		check(i, resp, body)
	}
	if closes {
		_, err := br.ReadByte()
		answer = append(answer, fmt.Sprintf("then %v", err))
		if !errors.Is(err, io.EOF) {
			t.Errorf("%s: the connection is still open after the answer (%v)", what, err)
		}
	}
	return strings.Join(answer, "\n")
}

// loggedExactly fails the test unless the access log holds, in any
// order, each line the goroutine path must log for each exchange (lines
// gives an exchange's name and lines), once each, and nothing more.
func loggedExactly[X any](t *testing.T, log string, exchanges []X, lines func(X) (name string, want []string)) {
	t.Helper()
	logged := strings.Split(strings.TrimSpace(log), "\n")
	for _, x := range exchanges {
		name, want := lines(x)
		for _, w := range want {
			i := slices.Index(logged, w)
			if i < 0 {
				t.Errorf("%s: the goroutine path logged no line %q:\n%s", name, w, log)
				continue
			}
			logged = slices.Delete(logged, i, i+1)
		}
	}
	if len(logged) > 0 {
		t.Errorf("the goroutine path logged more: %q", logged)
	}
}
