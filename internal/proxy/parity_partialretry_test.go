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
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// partialUpstream is the upstream of TestBodyArrivingPartSentRetriedSamePaths:
// the first attempt of each request (by path, /<cluster>/<case>/<client>)
// reads the first part of its body, tells the client to send the rest
// (its gate), and fails as its case says; the next one reads the whole
// body and answers 200 with its length, digest and attempt number.
type partialUpstream struct{ *gatedUpstream }

func (pu partialUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n := pu.attempt(r.URL.Path); n > 1 {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d %x attempt %d", r.Method, len(b), sha256.Sum256(b), n)
		return
	}
	if !pu.openGate(w, r) {
		return
	}
	switch strings.Split(r.URL.Path, "/")[2] {
	case "reset", "over-reset":
		panic(http.ErrAbortHandler) // the HTTP/1.1 connection closed, the HTTP/2 stream reset
	case "pertry":
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done() // the proxy gave up on the attempt
	default: // "503", "over-503"
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

// TestBodyArrivingPartSentRetriedSamePaths: a POST whose body is still
// arriving when its attempt fails after part of that body went upstream
// is retried on every path, HTTP/1.1 clients (a length, chunked) and h2c
// ones, HTTP/1.1 and HTTP/2 clusters, as Envoy's router retries it
// (Filter::decodeData buffers the body while a retry may come, up to the
// buffer limit; Filter::doRetry sends the new attempt what it buffered,
// then the rest as it comes): the first attempt reads the body's first
// part, then (reset) the upstream closes the connection or resets the
// stream, (503) answers 503 under retry_on 5xx, or (pertry) reads the
// rest and answers nothing until the per-try timeout, which runs from
// the request's end; the client sends the rest once the first attempt
// read the first part. The second attempt receives the whole body, every
// byte in order, and the client its answer, 200 after two attempts. A
// body whose first part alone outgrows route.MaxRetryBuffer (Envoy's
// default buffer limit) is not retried (over-503: the upstream's 503
// passes unflagged, not counted in upstream_rq_retry_limit_exceeded, as
// Envoy's decodeData dropped its retry state; over-reset: 503 after one
// attempt), the same on every path. Until round 34 the loops retried such
// a request only when they held it whole, and answered these the first
// attempt's failure (503, or 504 at the per-try timeout to an HTTP/1.1
// cluster), and the goroutine path flagged over-503 URX.
func TestBodyArrivingPartSentRetriedSamePaths(t *testing.T) {
	pu := partialUpstream{newGatedUpstream()}
	clusters := h1h2RetryClusters(t, pu)
	small := [][]byte{bytes.Repeat([]byte("a"), 3000), bytes.Repeat([]byte("b"), 70000), bytes.Repeat([]byte("c"), 2000)}
	big := [][]byte{bytes.Repeat([]byte("A"), proxyroute.MaxRetryBuffer+64<<10), bytes.Repeat([]byte("B"), 1000)}
	cases := []string{"reset", "503", "pertry", "over-503", "over-reset"}
	clients := []string{"length", "chunked", "h2c"}
	format := attemptLog()
	counters := []string{"upstream_rq_total", "upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_limit_exceeded",
		"upstream_rq_per_try_timeout", "upstream_rq_200", "upstream_rq_503"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			tag := strings.ReplaceAll(p.name, " ", "-") // the path's requests' own (the upstream counts attempts by path)
			h := newHarness(t, p.logged)
			logFile := pushRetries(t, h, format, clusters, &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2),
				PerTryTimeout: durationpb.New(500 * time.Millisecond)})
			h2c := h2cClient(t)
			answers := map[string]string{}
			var wantLog []string
			for _, c := range clusters {
				for _, cs := range cases {
					for _, client := range clients {
						path := fmt.Sprintf("/%s/%s/%s/%s", c.name, cs, client, tag)
						parts := small
						if strings.HasPrefix(cs, "over") {
							parts = big
						}
						gate, _ := pu.expect(path, len(parts[0]))
						// The first part goes after the head; the rest once
						// the first attempt read the first part.
						before := func(i int) {
							if i == 1 {
								select {
								case <-gate:
								case <-time.After(10 * time.Second):
									t.Errorf("%s: the first attempt did not read the first part", path)
								}
							}
							time.Sleep(partGap)
						}
						got := postPartsAs(t, h2c, h.addr("egress"), path, client, parts, before)
						whole := bytes.Join(parts, nil)
						want, line, attempts := fmt.Sprintf("200 POST %d %x attempt 2", len(whole), sha256.Sum256(whole)), "200 - 2", 2
						switch cs {
						case "over-503":
							want, line, attempts = "503 ", "503 - 1", 1
						case "over-reset":
							want, line, attempts = "503 "+resetReplyOf(c.h2), resetFlagOf(c.h2)+" 1", 1
						}
						checkAnswer(t, answers, path, got, want)
						wantLog = append(wantLog, fmt.Sprintf("%s POST %s %s", clientProto(client == "h2c"), path, line))
						if n := pu.times(path); n != attempts {
							t.Errorf("%s: the upstream saw %d attempts, want %d", path, n, attempts)
						}
					}
				}
			}
			log := awaitWantLog(t, logFile, wantLog)
			stats := checkClusterCounts(t, h, clusters, counters, func(retryCluster) string {
				// Three retried cases, three clients each; the two over
				// the bound are not retried.
				return "upstream_rq_total 24\nupstream_rq_retry 9\nupstream_rq_retry_success 9\nupstream_rq_retry_limit_exceeded 0\n" +
					"upstream_rq_per_try_timeout 3\nupstream_rq_200 9\nupstream_rq_503 6"
			})
			results[p.name] = pathResult{answers: answers, log: untagLog(log, tag), stats: stats}
		})
	}
	sameUntaggedAnswersAsGoroutinePath(t, results)
}

// resetReplyOf is the body of the 503 answering a reset of an attempt
// not retried: the HTTP/1.1 upstream closed its connection, the HTTP/2
// one reset its stream.
func resetReplyOf(h2 bool) string {
	if h2 {
		return "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
	}
	return "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
}

// resetFlagOf is the access log's status and flag for resetReplyOf's.
func resetFlagOf(h2 bool) string {
	if h2 {
		return "503 UR"
	}
	return "503 UC"
}

// postPartsGated sends a POST to the proxy at addr on a new HTTP/1.1
// connection: its head, then each of parts after before(i) returns (with
// a content-length, or each part a chunk), while it reads the answer,
// which it returns as its status and body. A write that fails (the
// proxy answered and closed) ends the body.
func postPartsGated(t *testing.T, addr, path string, parts [][]byte, chunked bool, before func(i int)) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	framing := "Transfer-Encoding: chunked"
	if !chunked {
		n := 0
		for _, p := range parts {
			n += len(p)
		}
		framing = fmt.Sprintf("Content-Length: %d", n)
	}
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", path, framing); err != nil {
		t.Fatal(err)
	}
	sent := make(chan struct{})
	go func() { // ends when the body is written or a write fails
		defer close(sent)
		for i, p := range parts {
			before(i)
			var err error
			if chunked {
				_, err = fmt.Fprintf(c, "%x\r\n%s\r\n", len(p), p)
			} else {
				_, err = c.Write(p)
			}
			if err != nil {
				return
			}
		}
		if chunked {
			_, _ = io.WriteString(c, "0\r\n\r\n")
		}
	}()
	defer func() { <-sent }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp.Status[:3] + " " + string(b)
}

// postPartsH2Gated sends a POST through the h2c client cl to the proxy
// at addr: its HEADERS, then each of parts in DATA after before(i)
// returns (no content-length), and returns the answer's status and body.
func postPartsH2Gated(t *testing.T, cl *http.Client, addr, path string, parts [][]byte, before func(i int)) string {
	t.Helper()
	pr, pw := io.Pipe()
	sent := make(chan struct{})
	go func() { // ends when the body is written or the transport closed it
		defer close(sent)
		for i, p := range parts {
			before(i)
			if _, err := pw.Write(p); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	defer func() { <-sent }()
	defer pr.Close() // a writer blocked on a body the transport no longer reads ends
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp.Status[:3] + " " + string(b)
}
