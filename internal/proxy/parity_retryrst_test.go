package proxy

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
)

// earlyStatusUpstream is the upstream of
// TestRetriedStatusResetsRequestSamePaths, a raw h2c server: it answers
// the first attempt of each request (by path) 503 with END_STREAM as
// soon as its HEADERS come, the request's body still to come, and opens
// the request's gate (the client sends the rest); it answers the next
// attempt, once its request ended, 200 with its body's length. It notes
// how the proxy ended a first attempt's stream (RST_STREAM, or
// END_STREAM when the request's end went before the 503 was read), and
// never resets a stream itself (as a server that waits for the request's
// end may not), so that a stream the proxy leaves open stays open.
type earlyStatusUpstream struct {
	mu       sync.Mutex
	attempts map[string]int
	gates    map[string]chan struct{}
	resets   map[string][]string // how path's first attempt's stream ended on the proxy's side: RST_STREAM, END_STREAM
}

// expect sets up path's exchange and returns its gate.
func (eu *earlyStatusUpstream) expect(path string) <-chan struct{} {
	eu.mu.Lock()
	defer eu.mu.Unlock()
	g := make(chan struct{})
	eu.gates[path] = g
	return g
}

// resetsOf is how path's first attempt's stream ended on the proxy's
// side so far ("" while it is open).
func (eu *earlyStatusUpstream) resetsOf(path string) string {
	eu.mu.Lock()
	defer eu.mu.Unlock()
	return strings.Join(eu.resets[path], ",")
}

// serve serves one h2c connection until it ends.
func (eu *earlyStatusUpstream) serve(c net.Conn) {
	w := acceptRawH2(c)
	if w == nil {
		return
	}
	paths := map[uint32]string{} // by stream: its request's path
	first := map[uint32]bool{}   // answered at its HEADERS
	bodies := map[uint32]int{}
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			return
		}
		if handled, gone := w.control(f); gone {
			return
		} else if handled {
			continue
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if first[id] {
				eu.mu.Lock()
				eu.resets[paths[id]] = append(eu.resets[paths[id]], "RST_STREAM")
				eu.mu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			path := f.PseudoValue("path")
			paths[id] = path
			eu.mu.Lock()
			eu.attempts[path]++
			n, gate := eu.attempts[path], eu.gates[path]
			eu.mu.Unlock()
			if n == 1 {
				first[id] = true
				w.headers(id, true, 0, ":status", "503")
				_ = w.bw.Flush()
				close(gate) // the client sends the rest
			} else if f.StreamEnded() {
				w.headers(id, false, 0, ":status", "200")
				w.data(id, []byte("0 attempt 2"))
			}
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				_ = w.fr.WriteWindowUpdate(0, n)
				if !f.StreamEnded() {
					_ = w.fr.WriteWindowUpdate(id, n)
				}
			}
			if first[id] {
				if f.StreamEnded() {
					eu.mu.Lock()
					eu.resets[paths[id]] = append(eu.resets[paths[id]], "END_STREAM")
					eu.mu.Unlock()
				}
				continue
			}
			bodies[id] += len(f.Data())
			if f.StreamEnded() {
				w.headers(id, false, 0, ":status", "200")
				w.data(id, []byte(fmt.Sprintf("%d attempt 2", bodies[id])))
			}
		}
		_ = w.bw.Flush()
	}
}

// TestRetriedStatusResetsRequestSamePaths: an HTTP/2 upstream that
// answers a retriable status with END_STREAM while the request's body is
// still arriving has the attempt's stream reset (RST_STREAM) by every
// path before the retry, as Envoy's Filter::onUpstreamHeaders resets an
// attempt whose request was not all sent (!encodeComplete): else the
// stream stays open on an upstream that waits for the request's end,
// holding one of its concurrent streams. The retry gets the whole body.
func TestRetriedStatusResetsRequestSamePaths(t *testing.T) {
	eu := &earlyStatusUpstream{attempts: map[string]int{}, gates: map[string]chan struct{}{}, resets: map[string][]string{}}
	up := tcpUpstream(t, eu.serve) // ends when the proxy closes the connection
	clusters := []retryCluster{{"h2", true, []string{up}, 25 * time.Millisecond}}
	parts := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 2000)}
	format := attemptLog()
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			tag := strings.ReplaceAll(p.name, " ", "-")
			h := newHarness(t, p.logged)
			logFile := pushRetries(t, h, format, clusters, &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2)})
			h2c := h2cClient(t)
			answers := map[string]string{}
			var wantLog []string
			for _, client := range []string{"length", "chunked", "h2c"} {
				path := fmt.Sprintf("/h2/%s/%s", client, tag)
				gate := eu.expect(path)
				before := func(i int) {
					if i == 1 {
						select {
						case <-gate:
						case <-time.After(10 * time.Second):
							t.Errorf("%s: the first attempt was not answered", path)
						}
						// Most often after the proxy read the 503: its
						// stream is reset then; else its request's end
						// closes it.
						time.Sleep(5 * partGap)
					}
				}
				got := postPartsAs(t, h2c, h.addr("egress"), path, client, parts, before)
				key := strings.TrimSuffix(path, "/"+tag)
				checkAnswer(t, answers, key, got, "200 3000 attempt 2")
				// Awaited, not assumed read: the reset went on the
				// connection before the retry's HEADERS, or on another.
				var rst string
				for i := 0; i < 200 && rst == ""; i++ {
					if rst = eu.resetsOf(path); rst == "" {
						time.Sleep(25 * time.Millisecond)
					}
				}
				if rst != "RST_STREAM" && rst != "END_STREAM" {
					t.Errorf("%s: the first attempt's stream ended with %q, want RST_STREAM or END_STREAM", path, rst)
				}
				wantLog = append(wantLog, fmt.Sprintf("%s POST %s 200 - 2", clientProto(client == "h2c"), path))
			}
			awaitWantLog(t, logFile, wantLog)
			results[p.name] = pathResult{answers: answers}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
