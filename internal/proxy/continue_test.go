package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestExpectContinueRefusedLocally: a request expecting 100 Continue that
// the proxy answers itself (no route) before asking for the body ends the
// connection: the client may send the body or not, so the next bytes
// cannot be read as a request.
func TestExpectContinueRefusedLocally(t *testing.T) {
	h := newHarness(t)
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/only", "c"))),
		staticCluster("c", "127.0.0.1:1"))
	c, err := net.Dial("tcp", h.addr("egress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "POST /elsewhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("%v %v, want the proxy's 404", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if !resp.Close {
		t.Error("a final answer before the body was asked for does not say Connection: close")
	}
	// The client does not send the body; its next request must not be
	// taken for it (or for a request).
	_, _ = io.WriteString(c, "GET /only HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, err := br.ReadByte(); err == nil {
		t.Errorf("the connection answered again (%q...) after the refused body", b)
	}
}
