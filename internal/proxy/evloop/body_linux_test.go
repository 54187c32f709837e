package evloop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMalformedBodyAfterResponseStarted: an upstream answers before the
// request's chunked body is complete, and the client then sends a chunk
// size that is not one. The response's head and first bytes went down
// already: no 400 follows them (the loops wrote one into the 200's
// body, and counted both), the connection closes with the response
// cut, a protocol error counted once and the request counted as its
// 200, as Envoy's codec error after a response started.
func TestMalformedBodyAfterResponseStarted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // ends at the first accept's error: ln closed by Cleanup
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // ends when the proxy closes the connection, or at its deadline
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	srv, st := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {ln.Addr().String()}}})
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "zz\r\nabc\r\n")
	rest, err := io.ReadAll(br)
	if len(rest) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after the response's first bytes: %q, %v; want nothing, then the end of the stream", rest, err)
	}
	var got []string
	for _, name := range []string{"downstream_rq_2xx", "downstream_rq_4xx", "downstream_rq_completed", "downstream_cx_protocol_error"} {
		v, _ := st.Value("http.ingress." + name)
		got = append(got, fmt.Sprintf("%s %d", name, v))
	}
	if g, want := strings.Join(got, ", "), "downstream_rq_2xx 1, downstream_rq_4xx 0, downstream_rq_completed 1, downstream_cx_protocol_error 1"; g != want {
		t.Errorf("counters %s, want %s", g, want)
	}
}
