package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRetryResentMidWriteSamePaths: a body of 21 chunks and a bit (in
// 16 KiB writes; chunked, with a length, and over h2c) whose first
// attempt reads it all and answers 503 is retried, and the retry is sent
// from what was kept: to an HTTP/1.1 cluster whose host takes a few KiB
// at a time (a receive buffer of 4 KiB), to an HTTP/2 one whose host
// gives a stream window of 65,535 bytes. The second attempt's host
// answers 200 before it reads the body (the response begins while the
// kept body is still being written: the loops' dropKept, h2uCutReplay),
// then reads it and answers its length and digest. The body must arrive
// whole and in order, on every path: from round 36 the loops write an
// HTTP/1.1 retry's kept chain with writev and keep its unwritten tail as
// chunks when the response begins, and send an HTTP/2 retry's DATA from
// the chain, where they copied it into one buffer.
func TestRetryResentMidWriteSamePaths(t *testing.T) {
	const size = 21<<14 + 777
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*13 + i>>12) // bytes out of place change the digest
	}
	want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
	var mu sync.Mutex
	attempts := map[string]int{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		attempts[r.URL.Path]++
		n := attempts[r.URL.Path]
		mu.Unlock()
		if n == 1 {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex() // HTTP/1.1: the body read after the head went
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			t.Errorf("%s: flush: %v", r.URL.Path, err)
		}
		answerBodyDigest(w, r)
	})
	up := slowReadingUpstream(t, handler)
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			postRetryShapes(t, h, up, "5xx", strings.ReplaceAll(p.name, " ", "-"), body, func(path string, status int, got []byte, err error) {
				mu.Lock()
				n := attempts[path]
				mu.Unlock()
				if err != nil || status != http.StatusOK || string(got) != want || n != 2 {
					t.Errorf("%s: %d %q (%v) after %d attempts, want 200 %q after 2", path, status, got, err, n, want)
				}
			})
		})
	}
}

// postRetryShapes gives h routes /h1/ and /h2/ under a retry policy
// retrying retryOn (2 retries, 1 ms back-off) to an HTTP/1.1 and an
// HTTP/2 cluster of up, and posts body to /{h1,h2}/{chunked,length,h2c}/tag
// in 16 KiB writes (writesOf): chunked, with a length, and over h2c.
// check gets each answer, or the error of a request that got none; a
// request that makes no progress ends after a minute, failing its check
// and not the run.
func postRetryShapes(t *testing.T, h *harness, up, retryOn, tag string, body []byte, check func(path string, status int, got []byte, err error)) {
	t.Helper()
	policy := func(prefix, cluster string) *routev3.Route {
		r := routeTo(prefix, cluster)
		r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: retryOn, NumRetries: u32(2),
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
		return r
	}
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, policy("/h1/", "c"), policy("/h2/", "h2"))),
		edsCluster("c"), cla("c", up),
		edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
		cla("h2", up))
	h1 := &http.Transport{}
	t.Cleanup(h1.CloseIdleConnections)
	clients := map[string]*http.Client{"chunked": {Transport: h1}, "length": {Transport: h1}, "h2c": h2cClient(t)}
	for _, cluster := range []string{"h1", "h2"} {
		for _, client := range []string{"chunked", "length", "h2c"} {
			path := fmt.Sprintf("/%s/%s/%s", cluster, client, tag)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.addr("egress")+path, &writesOf{body: body})
			if err != nil {
				t.Fatal(err)
			}
			if client == "length" {
				req.ContentLength = int64(len(body))
			}
			resp, err := clients[client].Do(req)
			if err != nil {
				cancel()
				check(path, 0, nil, err)
				continue
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			check(path, resp.StatusCode, got, err)
		}
	}
}

// slowReadingUpstream serves h over HTTP/1.1 and h2c on a loopback port
// until the test ends, and returns its address: its connections take
// what a receive buffer of 4 KiB holds at a time (SO_RCVBUF), in
// segments of 536 bytes (TCP_MAXSEG, announced to the proxy, whose
// send buffer Linux sizes by it: with loopback's 64 KiB segments it
// takes a megabyte at once, and the proxy's write of a kept body would
// never stop midway), both set on the listener so that accepted sockets
// have them from the start; its HTTP/2 streams have a window of 65,535
// bytes.
func slowReadingUpstream(t *testing.T, h http.Handler) string {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
			if serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols),
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 65535}}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }() // ends with srv.Close in Cleanup
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// answerBodyDigest reads r's whole body and answers its length and
// SHA-256 ("read: ..." when the read fails): what the retry parity
// tests' upstreams send once their head is out.
func answerBodyDigest(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		fmt.Fprintf(w, "read: %v", err)
		return
	}
	fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
}
