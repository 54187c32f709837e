package evloop

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	srv, st := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "dead"}},
		Clusters: map[string][]string{"dead": {dead}}})
	resp, err := http.Get("http://" + srv.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "upstream connect error") {
		t.Errorf("%d %q, want 503 upstream connect error", resp.StatusCode, b)
	}
	if v, _ := st.Value("cluster.dead.upstream_cx_connect_fail"); v != 1+maxRetries {
		t.Errorf("connect failures %d, want %d (the request and its retries)", v, 1+maxRetries)
	}
}

// An upstream that closes each keep-alive connection after one response:
// a request sent on the pooled connection before the proxy saw the close
// is retried on a new one, unseen by the client.
func TestUpstreamClosesIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // the upstream; ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			if req, err := http.ReadRequest(br); err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
			c.Close()
		}
	}()
	srv, st := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {ln.Addr().String()}}})
	rs, bodies, _ := raw(t, srv.Addr(), strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 20), 20)
	for i := range rs {
		if rs[i].StatusCode != 200 || bodies[i] != "ok" {
			t.Fatalf("request %d: %d %q", i, rs[i].StatusCode, bodies[i])
		}
	}
	if v, _ := st.Value("cluster.a.upstream_cx_total"); v < 20 {
		t.Errorf("upstream_cx_total %d, want one per request", v)
	}
}

func TestUpstreamCutMidBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // a broken upstream; ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = bufio.NewReader(c).ReadString('\n')
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
			c.Close()
		}
	}()
	srv, _ := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {ln.Addr().String()}}})
	resp, err := http.Get("http://" + srv.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Error("a response the upstream cut was delivered as complete")
	}
}
