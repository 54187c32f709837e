package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestExpectContinueSamePaths: a request with Expect: 100-continue gets
// 100 Continue as soon as its head is read, before routing or any
// upstream, as Envoy's connection manager sends it (decodeHeaders, without
// proxy_100_continue); the client then sends its body. A local reply made
// before the body has arrived (no route, which the loops hand to the
// goroutine path before answering anything, at the head; an upstream's
// connect failure, which the loops answer themselves, with the body sent
// 100 ms after the 100) then says connection: close and closes the
// connection, as Envoy's connection manager does after a reply made
// before the request is complete (route.LocalReplyCloses); on every path
// alike. Envoy's answer to a connect failure with the body sent at once
// depends on which comes first, so that is not asked. The goroutine path
// sent the 100 when the body was first read, so after a connect failure
// it answered 503 without one and closed the connection; the loops sent
// it at dispatch and skipped the body; both paths then skipped the body
// after any local reply and kept the connection.
func TestExpectContinueSamePaths(t *testing.T) {
	ok := newBackend(t, "ok")
	dead := deadAddr(t)
	const (
		length  = "Content-Length: 5\r\n\r\nhello"
		chunked = "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	)
	requests := []struct {
		name, path, expect, body, want string
		late                           bool // the body 100 ms after the 100: after the connect failed
	}{
		{"connect failure, content-length body", "/dead", "100-continue", length, "100, then 503 close true, then closed", true},
		{"connect failure, chunked body", "/dead", "100-continue", chunked, "100, then 503 close true, then closed", true},
		{"HTTP/2 cluster's connect failure, content-length body", "/dead2", "100-continue", length, "100, then 503 close true, then closed", true},
		{"HTTP/2 cluster's connect failure, chunked body", "/dead2", "100-continue", chunked, "100, then 503 close true, then closed", true},
		// The loops hand a request without a route to the goroutine path
		// before they answer anything: its 100 and 404 are the goroutine
		// path's (the connect failures above are the loops' own replies).
		{"no route, handed off", "/nowhere", "100-continue", length, "100, then 404 close true, then closed", false},
		{"served", "/ok", "100-continue", length, "100, then 200 close false, then 200 close false", false},
		// The value as a whole, case aside, as Envoy compares it; any
		// other expectation is forwarded (TestExpectOtherSamePaths).
		{"case aside", "/ok", "100-Continue", length, "100, then 200 close false, then 200 close false", false},
	}
	// Not %BYTES_RECEIVED%: what of a body came before a connect failed
	// is a race, which the loops count (as Envoy counts what it decoded)
	// and the goroutine path, whose transport reads the body once
	// connected, does not.
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %REQ(EXPECT)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %UPSTREAM_CLUSTER%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/dead2", "dead2"), routeTo("/dead", "dead"),
				routeTo("/ok", "ok"), routeTo("/next", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()), edsCluster("dead"), cla("dead", dead),
			edsCluster("dead2", h2Upstream), cla("dead2", dead))
		res := pathResult{answers: map[string]string{}}
		sent := 0
		for _, r := range requests {
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			framing, body, _ := strings.Cut(r.body, "\r\n\r\n")
			_, _ = io.WriteString(c, "POST "+r.path+" HTTP/1.1\r\nHost: x\r\nExpect: "+r.expect+"\r\n"+framing+"\r\n\r\n")
			br := bufio.NewReader(c)
			var answer []string
			// As a client does: the body only once the 100 came.
			if resp, err := http.ReadResponse(br, nil); err != nil {
				answer = append(answer, err.Error())
			} else if resp.StatusCode != http.StatusContinue {
				answer = append(answer, fmt.Sprintf("%d before the body", resp.StatusCode))
				sent++
			} else {
				answer = append(answer, "100")
				if r.late {
					time.Sleep(100 * time.Millisecond)
				}
				_, _ = io.WriteString(c, body+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				more, n := twoAnswers(br)
				answer = append(answer, more...)
				sent += n
			}
			_ = c.Close()
			got := strings.Join(answer, ", then ")
			res.answers[r.name] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, r.name, got, r.want)
			}
		}
		res.log = awaitLog(t, logFile, sent)
		res.stats = h.counts("http.egress.", []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx", "downstream_rq_4xx",
			"downstream_rq_5xx", "downstream_cx_protocol_error", "downstream_cx_total"})
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, nil) // each answer was checked as it came
}

// TestExpectContinueH2SamePaths: over HTTP/2 (h2c) neither path sends
// the 100 at the request's HEADERS, as Envoy would: the goroutine path's
// server (golang.org/x/net) sends it when the body is first read, once
// the request goes upstream, and the loops send it then too, so that a
// client waiting for it before its body gets it from a served request and
// not from one answered by the proxy itself (no route), on every path
// alike.
func TestExpectContinueH2SamePaths(t *testing.T) {
	ok := newBackend(t, "ok")
	results := map[string]pathResult{}
	paths := []string{"/ok", "/nowhere"}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/ok", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()))
		res := pathResult{answers: map[string]string{}}
		for _, path := range paths {
			cl := dialH2(t, h.addr("egress"))
			_ = cl.c.SetDeadline(time.Now().Add(5 * time.Second))
			cl.hbuf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", path},
				{"expect", "100-continue"}, {"content-length", "5"}} {
				_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.hbuf.Bytes(), EndHeaders: true})
			_ = cl.bw.Flush()
			var answer []string
			for f := range cl.frames {
				if f.stream != 1 {
					continue
				}
				if f.typ == http2.FrameRSTStream {
					answer = append(answer, "RST_STREAM "+f.code.String())
					break
				}
				if f.typ != http2.FrameHeaders {
					if f.end {
						break
					}
					continue
				}
				answer = append(answer, f.status)
				if f.status == "100" {
					// As a client does: the body only once the 100 came.
					_ = cl.fr.WriteData(1, true, []byte("hello"))
					_ = cl.bw.Flush()
				}
				if f.end {
					break
				}
			}
			_ = cl.c.Close()
			res.answers[path] = strings.Join(answer, ", then ")
		}
		results[p.name] = res
	}
	for path, want := range map[string]string{"/ok": "100, then 200", "/nowhere": "404"} {
		if got := results["goroutines"].answers[path]; got != want {
			t.Errorf("goroutines, %s: answered %s; want %s", path, got, want)
		}
	}
	sameAsGoroutinePath(t, results, paths)
}

// TestExpectOtherH2SamePaths: over HTTP/2 an expect field other than
// 100-continue is forwarded (to an HTTP/1.1 cluster and to an HTTP/2 one),
// as Envoy forwards it; the loops dropped every expect field, the
// goroutine path forwards them. Fields holding the 100-continue token are
// all dropped, as x/net's server drops them on the goroutine path
// (route.H2List.Continue): "100-continue, foo" too, which Envoy, matching
// the value as a whole, would forward.
func TestExpectOtherH2SamePaths(t *testing.T) {
	h1 := echoHopUpstream(t)
	h2 := h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Join(r.Header["Expect"], "|"))
	}))
	expects := []string{"foo", "100-continue, foo", "100-Continue"}
	want := map[string]string{
		"/h1 foo": "200 Expect=foo", "/h1 100-continue, foo": "200 ", "/h1 100-Continue": "200 ",
		"/h2 foo": "200 foo", "/h2 100-continue, foo": "200 ", "/h2 100-Continue": "200 ",
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1", "h1"), routeTo("/h2", "h2"))),
			edsCluster("h1"), cla("h1", h1),
			edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }), cla("h2", h2))
		cl := h2cClient(t)
		res := pathResult{answers: map[string]string{}}
		for _, path := range []string{"/h1", "/h2"} {
			for _, ex := range expects {
				name := path + " " + ex
				req, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Expect", ex)
				resp, err := cl.Do(req)
				if err != nil {
					res.answers[name] = err.Error()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				res.answers[name] = fmt.Sprintf("%d %s", resp.StatusCode, body)
				if p.goroutines && res.answers[name] != want[name] {
					t.Errorf("goroutines, %s: answered %q; want %q", name, res.answers[name], want[name])
				}
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}
