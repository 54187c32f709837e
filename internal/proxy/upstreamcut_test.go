package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestUpstreamCutMidBody: a response the upstream breaks after its head
// went downstream must not reach the client as a complete one: a chunked
// response ends without its last chunk, a sized one short, and the
// client sees an error after the bytes the upstream did send.
func TestUpstreamCutMidBody(t *testing.T) {
	for _, tc := range []struct{ name, head string }{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{"sized", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() { // the upstream: answers each connection's request with a cut response; ends when ln closes
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_, _ = http.ReadRequest(bufio.NewReader(c))
					_, _ = io.WriteString(c, tc.head)
					_ = c.Close()
				}
			}()
			h := newHarness(t)
			h.push(
				httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
				staticCluster("c", ln.Addr().String()))
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + h.addr("egress") + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("the client read %q as a complete response", b)
			}
			if string(b) != "hello" {
				t.Errorf("the client read %q before the cut, want what the upstream sent, \"hello\"", b)
			}
		})
	}
}
