package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// slowRead and slowPause make a peer that reads slowly: at most slowRead
// bytes a Read, each after slowPause, over a socket whose receive buffer
// is slowRcvBuf, so that the proxy's writes to it meet a full socket
// (EAGAIN) in the middle of what it sealed for one write.
const (
	slowRead   = 4096
	slowPause  = 50 * time.Microsecond
	slowRcvBuf = 4096
	slowStall  = 3 * time.Millisecond
)

// slowConn is a connection read slowly (slowRead, slowPause), with a
// longer pause (slowStall) every 32 reads, in which the writer's socket
// fills whatever its send buffer.
type slowConn struct {
	net.Conn
	reads *int
}

func (c slowConn) Read(p []byte) (int, error) {
	*c.reads++
	time.Sleep(slowPause)
	if *c.reads%32 == 0 {
		time.Sleep(slowStall)
	}
	return c.Conn.Read(p[:min(len(p), slowRead)])
}

// slowListener hands out its connections as slowConns.
type slowListener struct{ net.Listener }

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return slowConn{c, new(int)}, nil
}

// smallRcvBuf sets a socket's receive buffer to slowRcvBuf before it
// listens or connects (an accepted socket takes its listener's).
func smallRcvBuf(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, slowRcvBuf)
	}); cerr != nil {
		return cerr
	}
	return err
}

// slowPattern is the body of n bytes a download of seed returns.
func slowPattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + seed + i>>9)
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// firstDiff is the offset of the first byte where got and want differ.
func firstDiff(got, want []byte) int {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return i
		}
	}
	return min(len(got), len(want))
}

// TestTLSSlowPeerSamePaths: over TLS to peers that read slowly (a small
// receive buffer, small reads with pauses), every byte arrives in order
// on every path: a retried upload (the first attempt answered 503 after
// reading the whole body, the retry sent from what the proxy kept) to an
// HTTP/1.1 cluster and to an HTTP/2 cluster over TLS, from an HTTP/1.1
// client and from an HTTP/2 client over TLS; and downloads to that HTTP/2
// client over TLS, six at once on its one connection, from a plaintext
// HTTP/1.1 cluster and from both TLS clusters. The upstream checks each
// attempt's body by its digest; the client checks each download's. On the
// loops the downloads are the HTTP/2 connection's output sealed in
// batches (writeTLSv) that a full socket takes in part (the proxy's send
// buffer on loopback holds more than a retried upload, whose batches under
// partial writes TestTLSKeptChainSlowPeer in evloop drives).
func TestTLSSlowPeerSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	var mu sync.Mutex
	attempts := map[string]int{} // upload id → attempts the upstream read
	var bad []string             // an attempt's body that was not the client's
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/up/") {
			var got strings.Builder
			b, err := io.ReadAll(r.Body)
			id, want := r.Header.Get("X-Upload-Id"), r.Header.Get("X-Want-Digest")
			mu.Lock()
			attempts[id]++
			n := attempts[id]
			if err != nil || digest(b) != want {
				fmt.Fprintf(&got, "%s attempt %d: %d bytes, digest %s, err %v; want digest %s", id, n, len(b), digest(b), err, want)
				bad = append(bad, got.String())
			}
			mu.Unlock()
			switch {
			case got.Len() > 0:
				w.WriteHeader(http.StatusBadRequest)
			case n == 1:
				w.WriteHeader(http.StatusServiceUnavailable) // retried from what the proxy kept
			default:
				_, _ = io.WriteString(w, digest(b))
			}
			return
		}
		seed, _ := strconv.Atoi(r.URL.Query().Get("seed"))
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		body := slowPattern(seed, size)
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for len(body) > 0 {
			k := min(len(body), 8<<10)
			if _, err := w.Write(body[:k]); err != nil {
				return
			}
			body = body[k:]
		}
	})
	// The TLS upstream: HTTP/1.1 and HTTP/2 (ALPN), reading slowly.
	ln, err := (&net.ListenConfig{Control: smallRcvBuf}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	_ = srv.Listener.Close()
	srv.Listener = slowListener{ln}
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"app.local"}).TLS(t)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tlsUp := ln.Addr().String()
	plainUp := h1h2cUpstream(t, handler)

	dir := t.TempDir()
	client := writeLeaf(t, dir, ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/front"))
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	common := server.common(false)
	common.AlpnProtocols = []string{"h2", "http/1.1"}
	var routes []*routev3.Route
	for _, c := range []string{"ctls", "h2tls"} {
		rt := retryRoute(c, "5xx", 2)
		rt.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/up/" + c + "/"}
		routes = append(routes, rt)
	}
	for _, c := range []string{"c", "ctls", "h2tls"} {
		routes = append(routes, routeTo("/down/"+c+"/", c))
	}
	uploadSize := 192<<10 + 1234 // 13 chunks kept, four batches sealed
	downSize := 1<<20 + 4321

	// The HTTP/2 client over TLS: one connection, read slowly.
	h2Client := func() *http.Client {
		tc := clientTLS(ca, "svc.local")
		tc.NextProtos = []string{"h2"}
		d := &net.Dialer{Control: smallRcvBuf}
		tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxConnsPerHost: 1,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return slowConn{c, new(int)}, nil
			}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}

	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: common}),
				routeConfig("rds", vhost("v", []string{"*"}, routes...)),
				edsCluster("c"), cla("c", plainUp),
				edsCluster("ctls", upstreamTLS(client, "app.local", "app.local")), cla("ctls", tlsUp),
				edsCluster("h2tls", h2Upstream, upstreamTLS(client, "app.local", "app.local")), cla("h2tls", tlsUp))
			h1 := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
			t.Cleanup(h1.CloseIdleConnections)
			h2 := h2Client()
			clients := []struct {
				name, base string
				c          *http.Client
			}{{"h1", "http://" + h.addr("egress"), h1}, {"h2tls", "https://" + h.addr("ingress"), h2}}
			body := slowPattern(7, uploadSize)
			for _, cl := range clients {
				for _, cluster := range []string{"ctls", "h2tls"} {
					for _, length := range []bool{true, false} {
						id := fmt.Sprintf("%s %s->%s length=%v", p.name, cl.name, cluster, length)
						req, err := http.NewRequest(http.MethodPost, cl.base+"/up/"+cluster+"/", &writesOf{body: body})
						if err != nil {
							t.Fatal(err)
						}
						if length {
							req.ContentLength = int64(len(body))
						}
						req.Header.Set("X-Upload-Id", id)
						req.Header.Set("X-Want-Digest", digest(body))
						resp, err := cl.c.Do(req)
						if err != nil {
							t.Fatalf("%s: %v", id, err)
						}
						got, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil || resp.StatusCode != http.StatusOK || string(got) != digest(body) {
							t.Errorf("%s: %d %q (%v); want 200 and the body's digest %s", id, resp.StatusCode, got, err, digest(body))
						}
						mu.Lock()
						n := attempts[id]
						mu.Unlock()
						if n != 2 {
							t.Errorf("%s: the upstream read %d attempts; want 2 (one retry)", id, n)
						}
					}
				}
			}
			// Downloads to the slow HTTP/2 client over TLS, six at once
			// on its connection.
			var wg sync.WaitGroup
			errs := make(chan string, 12)
			for i, cluster := range []string{"c", "ctls", "h2tls", "c", "ctls", "h2tls"} {
				wg.Add(1)
				go func() { // ends when its download is read or fails (the client's timeout)
					defer wg.Done()
					seed := i*13 + 1
					url := fmt.Sprintf("%s/down/%s/?seed=%d&size=%d", clients[1].base, cluster, seed, downSize)
					resp, err := h2.Get(url)
					if err != nil {
						errs <- fmt.Sprintf("download %d from %s: %v", i, cluster, err)
						return
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					want := slowPattern(seed, downSize)
					if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || digest(got) != digest(want) {
						errs <- fmt.Sprintf("download %d from %s: %d %s, %d bytes (%v), digest %s, first difference at %d; want 200 over HTTP/2, %d bytes, digest %s",
							i, cluster, resp.StatusCode, resp.Proto, len(got), err, digest(got), firstDiff(got, want), len(want), digest(want))
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
			mu.Lock()
			for _, b := range bad {
				t.Errorf("upstream: %s", b)
			}
			bad = bad[:0]
			mu.Unlock()
			if !p.goroutines && !p.h2Goroutines {
				in, eg := h.listener("ingress"), h.listener("egress")
				if in.HandedOff() != 0 || eg.HandedOff() != 0 || in.LoopTLSConns() == 0 || in.LoopH2Conns() == 0 {
					t.Errorf("on the loops: %d and %d connections handed off, %d over TLS, %d HTTP/2; want none handed off, the HTTP/2 client's over TLS on them",
						in.HandedOff(), eg.HandedOff(), in.LoopTLSConns(), in.LoopH2Conns())
				}
			}
		})
	}
}
