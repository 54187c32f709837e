package cluster

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// rawServer accepts connections and runs script on each: a hand-written
// upstream that can misbehave as real ones do.
type rawServer struct {
	ln    net.Listener
	conns atomic.Int32
	wg    sync.WaitGroup
}

func newRawServer(t *testing.T, script func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Add(1)
	go func() { // accept loop; ends when ln is closed in Cleanup
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.wg.Add(1)
			go func() { // one connection; ends when script returns
				defer s.wg.Done()
				defer c.Close()
				script(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

// serveRequests answers every request on a connection with respond's
// bytes; close ends the connection after the first response.
func serveRequests(respond string, closeAfter bool) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, respond); err != nil || closeAfter {
				return
			}
		}
	}
}

// assignmentOf is cluster name's assignment of hosts at addrs.
func assignmentOf(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, addr := range addrs {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

func testCluster(t *testing.T, addr string) *Cluster {
	t.Helper()
	pb := &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       assignmentOf("c", addr)}
	c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.halt)
	return c
}

func get(t *testing.T, c *Cluster, ctx context.Context, method, addr string, body io.Reader) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.h1.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b), err
}

const ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestH1ClientKeepAlive(t *testing.T) {
	tests := []struct {
		name      string
		respond   string
		wantConns int32
	}{
		{"content-length responses reuse one connection", ok, 1},
		{"chunked responses reuse one connection", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 1},
		{"Connection: close is honoured", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 3},
		{"HTTP/1.0 without keep-alive is not reused", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, serveRequests(tc.respond, false))
			c := testCluster(t, srv.addr())
			for i := 0; i < 3; i++ {
				resp, body, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil)
				if err != nil || resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("request %d: %v %v %q", i, resp, err, body)
				}
			}
			if got := srv.conns.Load(); got != tc.wantConns {
				t.Errorf("%d connections, want %d", got, tc.wantConns)
			}
		})
	}
}

func TestH1ClientStaleConnection(t *testing.T) {
	// The upstream closes every connection after one response without
	// saying so: the next request finds the connection dead.
	srv := newRawServer(t, serveRequests(ok, true))
	c := testCluster(t, srv.addr())
	if _, _, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c, srv.addr())
	t.Run("an idempotent request is sent again on a new connection", func(t *testing.T) {
		resp, body, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil)
		if err != nil || body != "ok" {
			t.Fatalf("%v %v %q", resp, err, body)
		}
	})
	waitClosed(t, c, srv.addr())
	t.Run("a POST is not", func(t *testing.T) {
		_, _, err := get(t, c, context.Background(), http.MethodPost, srv.addr(), strings.NewReader("x"))
		if err == nil {
			t.Fatal("a POST on a dead connection succeeded; it must fail rather than be sent twice")
		}
	})
	t.Run("a connection idle long enough is checked before reuse", func(t *testing.T) {
		if _, _, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, srv.addr())
		c.h1.mu.Lock()
		for _, pc := range c.h1.idle[srv.addr()] {
			pc.idleSince = pc.idleSince.Add(-2 * staleAfter)
		}
		c.h1.mu.Unlock()
		_, _, err := get(t, c, context.Background(), http.MethodPost, srv.addr(), strings.NewReader("x"))
		if err != nil {
			t.Fatalf("POST after the check: %v", err)
		}
	})
}

// TestH1ClientUnsolicitedBytes: an upstream that sends more than the
// response (a body after a HEAD response) leaves bytes no request asked
// for; the connection must not serve the next request, which would read
// them as its response.
func TestH1ClientUnsolicitedBytes(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			resp := ok
			if req.Method == http.MethodHead {
				resp = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nWRONG!"
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	c := testCluster(t, srv.addr())
	if resp, _, err := get(t, c, context.Background(), http.MethodHead, srv.addr(), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	for i := range 3 {
		resp, body, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil)
		if err != nil || resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET %d after the HEAD: %v %v %q, want ok", i, resp, err, body)
		}
	}
}

// waitClosed waits until the upstream has closed the idle connection to addr.
func waitClosed(t *testing.T, c *Cluster, addr string) {
	t.Helper()
	c.h1.mu.Lock()
	l := c.h1.idle[addr]
	c.h1.mu.Unlock()
	if len(l) != 1 {
		t.Fatalf("%d idle connections, want 1", len(l))
	}
	_ = l[0].nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := l[0].br.Peek(1); !errors.Is(err, io.EOF) {
		t.Fatalf("upstream did not close: %v", err)
	}
	_ = l[0].nc.SetReadDeadline(time.Time{})
}

func TestH1ClientCancel(t *testing.T) {
	release := make(chan struct{})
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
		<-release
	})
	defer close(release)
	c := testCluster(t, srv.addr())
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.addr()+"/", nil)
	resp, err := c.h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel() // the body's rest never comes: cancellation must end the read
	if _, err := resp.Body.Read(buf); err == nil {
		t.Fatal("read after cancel succeeded")
	}
	_ = resp.Body.Close()
	c.h1.mu.Lock()
	idle := len(c.h1.idle[srv.addr()])
	c.h1.mu.Unlock()
	if idle != 0 {
		t.Errorf("a cancelled exchange left its connection in the pool")
	}
}

func TestH1ClientResponses(t *testing.T) {
	t.Run("1xx responses are traced and skipped", func(t *testing.T) {
		srv := newRawServer(t, serveRequests("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"+ok, false))
		c := testCluster(t, srv.addr())
		var got []int
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, code)
			return nil
		}}
		resp, body, err := get(t, c, httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, srv.addr(), nil)
		if err != nil || resp.StatusCode != 200 || body != "ok" || len(got) != 1 || got[0] != 103 {
			t.Fatalf("%v %v %q 1xx=%v", resp, err, body, got)
		}
	})
	t.Run("trailers arrive with the end of a chunked body", func(t *testing.T) {
		srv := newRawServer(t, serveRequests("HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 42\r\n\r\n", false))
		c := testCluster(t, srv.addr())
		resp, body, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil)
		if err != nil || body != "ok" || resp.Trailer.Get("X-Sum") != "42" {
			t.Fatalf("%v %q trailer %v", err, body, resp.Trailer)
		}
	})
	t.Run("a body closed early closes its connection", func(t *testing.T) {
		srv := newRawServer(t, serveRequests("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nokok", false))
		c := testCluster(t, srv.addr())
		req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr()+"/", nil)
		resp, err := c.h1.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if _, _, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil); err != nil {
			t.Fatal(err)
		}
		if n := srv.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2 (the half-read one is not reused)", n)
		}
	})
	t.Run("HEAD responses have no body to wait for", func(t *testing.T) {
		srv := newRawServer(t, serveRequests("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false))
		c := testCluster(t, srv.addr())
		for i := 0; i < 2; i++ {
			resp, body, err := get(t, c, context.Background(), http.MethodHead, srv.addr(), nil)
			if err != nil || resp.ContentLength != 100 || body != "" {
				t.Fatalf("%v %v %q", resp, err, body)
			}
		}
		if n := srv.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("a request body of unknown length goes to net/http's Transport", func(t *testing.T) {
		var sawChunked atomic.Bool
		srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			sawChunked.Store(len(req.TransferEncoding) > 0 && string(b) == "streamed")
			_, _ = io.WriteString(c, ok)
		})
		c := testCluster(t, srv.addr())
		pr, pw := io.Pipe()
		go func() { // the body's writer; ends when the body is written
			_, _ = io.WriteString(pw, "streamed")
			_ = pw.Close()
		}()
		if _, body, err := get(t, c, context.Background(), http.MethodPost, srv.addr(), pr); err != nil || body != "ok" || !sawChunked.Load() {
			t.Fatalf("%v %q chunked=%v", err, body, sawChunked.Load())
		}
	})
}
