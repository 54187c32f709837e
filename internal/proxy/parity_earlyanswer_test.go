package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// earlyUpstream is the upstream of TestEarlyAnswerGetsWholeBodySamePaths,
// a raw HTTP/1.1 server: it reads a request's head, reads none of its
// body until the client's writes stall (every buffer on the way full,
// the proxy holding body bytes it could not write yet), answers its head
// (200, chunked, its connection closed after), then reads the whole body
// and ends the answer with its length and digest.
type earlyUpstream struct {
	mu       sync.Mutex
	progress map[string]*atomic.Int64 // the client's bytes written, by path
}

// track is the counter path's client adds its written bytes to.
func (eu *earlyUpstream) track(path string) *atomic.Int64 {
	eu.mu.Lock()
	defer eu.mu.Unlock()
	n := new(atomic.Int64)
	eu.progress[path] = n
	return n
}

// answer serves one request on c.
func (eu *earlyUpstream) answer(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	eu.mu.Lock()
	n := eu.progress[req.URL.Path]
	eu.mu.Unlock()
	// Stalled: no byte written by the client for five polls in a row.
	// A stall seen too early only lets the proxy skip the case (the test
	// passes), never fails it.
	last, still := int64(-1), 0
	for still < 5 {
		time.Sleep(40 * time.Millisecond)
		if cur := n.Load(); cur == last && cur > 0 {
			still++
		} else {
			last, still = cur, 0
		}
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second)) // a body short of its length fails the test, not hangs it
	b, err := io.ReadAll(req.Body)
	msg := fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
	if err != nil {
		msg += " " + err.Error()
	}
	fmt.Fprintf(c, "%x\r\n%s\r\n0\r\n\r\n", len(msg), msg)
}

// TestEarlyAnswerGetsWholeBodySamePaths: an HTTP/1.1 upstream that
// answers its head before it reads the request's body, once the proxy
// holds body bytes it could not write yet, receives the whole body,
// every byte in order, on every path, under a retry policy that retries
// on the status (5xx: the loops keep the request for a retry until the
// head) and one that does not (connect-failure). Until round 34 the
// loops let the unwritten bytes go with the kept request when the
// response began (readUp, responseHead), and the upstream got the body
// without them.
func TestEarlyAnswerGetsWholeBodySamePaths(t *testing.T) {
	eu := &earlyUpstream{progress: map[string]*atomic.Int64{}}
	up := tcpUpstream(t, eu.answer) // ends when its exchange is answered or fails
	clusters := []retryCluster{{"h1", false, []string{up}, 25 * time.Millisecond}}
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: more than the sockets on the way hold
	want := fmt.Sprintf("200 %d %x", len(body), sha256.Sum256(body))
	var pieces [][]byte // sent one after the other, counted as they go
	for b := body; len(b) > 0; b = b[min(len(b), 16<<10):] {
		pieces = append(pieces, b[:min(len(b), 16<<10)])
	}
	format := attemptLog()
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			tag := strings.ReplaceAll(p.name, " ", "-")
			h := newHarness(t, p.logged)
			answers := map[string]string{}
			for _, on := range []string{"5xx", "connect-failure"} {
				logFile := pushRetries(t, h, format, clusters, &routev3.RetryPolicy{RetryOn: on, NumRetries: u32(2)})
				var wantLog []string
				for _, client := range []string{"length", "h2c"} {
					path := fmt.Sprintf("/h1/%s/%s/%s", on, client, tag)
					n := eu.track(path)
					// The client's bytes written, as each piece is about
					// to go.
					before := func(i int) {
						if i > 0 {
							n.Add(int64(len(pieces[i-1])))
						}
					}
					var got string
					if client == "h2c" {
						got = postPartsH2Gated(t, h2cClient(t), h.addr("egress"), path, pieces, before)
					} else {
						got = postPartsGated(t, h.addr("egress"), path, pieces, false, before)
					}
					checkAnswer(t, answers, strings.TrimSuffix(path, "/"+tag), got, want)
					wantLog = append(wantLog, fmt.Sprintf("%s POST %s 200 - 1", clientProto(client == "h2c"), path))
				}
				awaitWantLog(t, logFile, wantLog)
			}
			results[p.name] = pathResult{answers: answers}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
