package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// interimGet sends one request on a connection of its own (a chunked POST
// when chunked, which the goroutine path's HTTP/1.1 client hands to its
// fallback, net/http's Transport) and returns the answer as "status body".
func interimGet(t *testing.T, addr, path string, chunked bool) (*http.Response, string) {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if chunked {
		_, _ = io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
	} else {
		_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// TestInterimCountedSamePaths: an upstream's 100, 102, 103 or 104,
// dropped, is counted in the cluster's stats on every path as Envoy's
// router counts it before its filter manager drops it
// (Filter::onUpstream1xxHeaders, chargeUpstreamCode): upstream_rq_<code>,
// upstream_rq_1xx and upstream_rq_completed, besides the final
// response's; a 199, which Envoy's upstream request drops unseen, counts
// nothing. From an HTTP/1.1 upstream (a chunked request through the
// goroutine path's fallback client too) and an HTTP/2 one. Both paths
// counted none.
func TestInterimCountedSamePaths(t *testing.T) {
	h1Scripts := map[string]string{
		"/h1/hints": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/h1/other": "HTTP/1.1 199 Other\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	h1 := scriptedHTTP1Upstream(t, h1Scripts)
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		if strings.Join(r.values(":path"), "") == "/h2/hints" {
			w.headers(id, false, 0, ":status", "100")
			w.headers(id, false, 0, ":status", "103", "link", "</a.css>; rel=preload")
		} else {
			w.headers(id, false, 0, ":status", "199")
		}
		w.headers(id, false, 0, ":status", "200", "content-length", "2")
		w.data(id, []byte("ok"))
	})
	requests := []struct {
		path    string
		chunked bool
	}{{"/h1/hints", false}, {"/h1/hints", true}, {"/h1/other", false}, {"/h2/hints", false}, {"/h2/other", false}}
	want := map[string]int64{
		"h1.upstream_rq_100": 2, "h1.upstream_rq_103": 2, "h1.upstream_rq_199": 0, "h1.upstream_rq_1xx": 4,
		"h1.upstream_rq_200": 3, "h1.upstream_rq_2xx": 3, "h1.upstream_rq_completed": 7,
		"h2.upstream_rq_100": 1, "h2.upstream_rq_103": 1, "h2.upstream_rq_199": 0, "h2.upstream_rq_1xx": 2,
		"h2.upstream_rq_200": 2, "h2.upstream_rq_2xx": 2, "h2.upstream_rq_completed": 4,
	}
	var names []string
	for _, r := range requests {
		names = append(names, fmt.Sprintf("%s chunked %v", r.path, r.chunked))
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1/", "h1"), routeTo("/h2/", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for i, r := range requests {
			_, got := interimGet(t, h.addr("egress"), r.path, r.chunked)
			res.answers[names[i]] = got
			if got != "200 ok" {
				t.Errorf("%s, %s: answered %s; want 200 ok", p.name, names[i], got)
			}
		}
		var stats []string
		for _, cl := range []string{"h1", "h2"} {
			for _, n := range []string{"upstream_rq_100", "upstream_rq_103", "upstream_rq_199", "upstream_rq_1xx",
				"upstream_rq_200", "upstream_rq_2xx", "upstream_rq_completed"} {
				got := h.stat("cluster." + cl + "." + n)
				stats = append(stats, fmt.Sprintf("%s.%s %d", cl, n, got))
				if got != want[cl+"."+n] {
					t.Errorf("%s: cluster.%s.%s = %d; want %d", p.name, cl, n, got, want[cl+"."+n])
				}
			}
		}
		res.stats = strings.Join(stats, "\n")
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// TestPerTryAfterInterimSamePaths: once an upstream's 100 (or 102, 103,
// 104) came, the request's per-try timeout no longer ends it, on every
// path, as Envoy's upstream request ignores its per-try timeout once the
// router took a 1xx (UpstreamRequest::onPerTryTimeout: the response
// started, Filter::onUpstream1xxHeaders): the final response, later than
// the per-try timeout, goes to the client, from an HTTP/1.1 upstream and
// an HTTP/2 one. Without the 1xx, or after a 199 (dropped unseen by
// Envoy's upstream request), the per-try timeout ends each attempt (504
// after the one retry). Both paths answered 504 after the 100 too.
func TestPerTryAfterInterimSamePaths(t *testing.T) {
	const perTry, late = 100 * time.Millisecond, 400 * time.Millisecond
	interim := func(path string) string {
		switch {
		case strings.HasSuffix(path, "/slow"):
			return "100"
		case strings.HasSuffix(path, "/slow199"):
			return "199"
		}
		return ""
	}
	h1 := h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool { // one answer a connection
		if st := interim(req.URL.Path); st != "" {
			_, _ = io.WriteString(c, "HTTP/1.1 "+st+" Interim\r\n\r\n")
		}
		time.Sleep(late) // the upstream's answer comes after the per-try timeout
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
		return false
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		if st := interim(strings.Join(r.values(":path"), "")); st != "" {
			w.headers(id, false, 0, ":status", st)
			_ = w.bw.Flush()
		}
		time.Sleep(late) // likewise (the connection's frames wait meanwhile)
		w.headers(id, false, 0, ":status", "200", "content-length", "4")
		w.data(id, []byte("late"))
	})
	route := func(prefix, cluster string) *routev3.Route {
		r := retryRoute(cluster, "5xx,reset", 1)
		r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
		r.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(perTry)
		return r
	}
	requests := []struct{ path, want string }{
		{"/h1/slow", "200 late"},
		{"/h1/slow0", "504 upstream request timeout"},
		{"/h1/slow199", "504 upstream request timeout"},
		{"/h2/slow", "200 late"},
		{"/h2/slow0", "504 upstream request timeout"},
		{"/h2/slow199", "504 upstream request timeout"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, route("/h1/", "h1"), route("/h2/", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			_, got := interimGet(t, h.addr("egress"), r.path, false)
			res.answers[r.path] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, r.path, got, r.want)
			}
		}
		res.stats = h.countsBy("cluster", []string{"h1", "h2"}, []string{"upstream_rq_total", "upstream_rq_per_try_timeout", "upstream_rq_retry", "upstream_rq_100"})
		if want := "h1.upstream_rq_total 5\nh1.upstream_rq_per_try_timeout 4\nh1.upstream_rq_retry 2\nh1.upstream_rq_100 1\n" +
			"h2.upstream_rq_total 5\nh2.upstream_rq_per_try_timeout 4\nh2.upstream_rq_retry 2\nh2.upstream_rq_100 1"; res.stats != want {
			t.Errorf("%s: counters\n%s\nwant\n%s", p.name, res.stats, want)
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestBodylessFramedSamePaths: an HTTP/1.1 upstream's 1xx or 204 head
// with a Transfer-Encoding, or a Content-Length other than 0, is the
// upstream's protocol error on every path, as Envoy's HTTP/1 codec
// refuses it (ClientConnectionImpl::onHeadersCompleteBase;
// route.BodylessFramed): 502 "... reset reason: protocol error", retried
// as a reset (a 1xx so refused ends no retries, and is not counted), so
// that the answer says "retried and the latest reset reason"; a
// "Content-Length: 0" on either is taken and removed, a 204's client
// getting none. A chunked request goes through the goroutine path's
// fallback client, which checks a 1xx head's Content-Length only (its
// Transport drops the Transfer-Encoding before any hook sees it). Both
// paths took them all, and relayed the 204's Content-Length.
func TestBodylessFramedSamePaths(t *testing.T) {
	var attempts atomic.Int64
	scripts := map[string]string{
		"/te1xx":  "HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/cl1xx":  "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/cl01xx": "HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/te204":  "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"/cl204":  "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
		"/cl0204": "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
	}
	h1 := h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool { // one script a connection
		attempts.Add(1)
		_, _ = io.WriteString(c, scripts[req.URL.Path])
		return false
	})
	// Retried, so worded as after a retry (route.RetriedBody).
	const upe = "502 upstream connect error or disconnect/reset before headers. retried and the latest reset reason: protocol error"
	requests := []struct {
		path    string
		chunked bool
		want    string
	}{
		{"/te1xx", false, upe + " attempts 3"},
		{"/cl1xx", false, upe + " attempts 3"},
		{"/cl1xx", true, upe + " attempts 3"},
		{"/cl01xx", false, "200 ok attempts 1"},
		{"/cl01xx", true, "200 ok attempts 1"},
		{"/te204", false, upe + " attempts 3"},
		{"/te204", true, upe + " attempts 3"},
		{"/cl204", false, upe + " attempts 3"},
		{"/cl204", true, upe + " attempts 3"},
		{"/cl0204", false, "204  content-length [] attempts 1"},
		{"/cl0204", true, "204  content-length [] attempts 1"},
	}
	var names []string
	for _, r := range requests {
		names = append(names, fmt.Sprintf("%s chunked %v", r.path, r.chunked))
	}
	route := retryRoute("h1", "5xx,reset", 2)
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, route)), edsCluster("h1"), cla("h1", h1))
		res := pathResult{answers: map[string]string{}}
		for i, r := range requests {
			attempts.Store(0)
			resp, got := interimGet(t, h.addr("egress"), r.path, r.chunked)
			if resp != nil && resp.StatusCode == http.StatusNoContent {
				got += fmt.Sprintf(" content-length %q", resp.Header["Content-Length"])
			}
			got += fmt.Sprintf(" attempts %d", attempts.Load())
			res.answers[names[i]] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, names[i], got, r.want)
			}
		}
		res.stats = h.counts("cluster.h1.", []string{"upstream_rq_1xx", "upstream_rq_2xx", "upstream_rq_completed", "upstream_rq_retry"})
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// TestPerTryAfterHeadSamePaths: once a final response head went to the
// client, the request's per-try timeout no longer ends it, on every path,
// as Envoy's upstream request ignores its per-try timeout once the
// router's downstream_response_started_ is set (UpstreamRequest::
// onPerTryTimeout; Filter::onUpstreamHeaders sets it as it sends the
// head on): a streamed body (of no length told, which every path sends
// on as it comes) whose end comes after the per-try timeout reaches the
// client whole, from an HTTP/1.1 upstream and an HTTP/2 one, to an
// HTTP/1.1 client and an HTTP/2 one, not counted as a per-try timeout.
// The route timeout still cuts it (upstream_rq_timeout): the HTTP/1.1
// client's connection closes short of the body, the HTTP/2 client's
// stream is reset. Both paths cut the body at the per-try timeout.
func TestPerTryAfterHeadSamePaths(t *testing.T) {
	const perTry, late, routeTimeout = 100 * time.Millisecond, 400 * time.Millisecond, 250 * time.Millisecond
	h1 := h1Upstream(t, func(c net.Conn, _ *http.Request, _ []byte) bool { // one answer a connection
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\n")
		time.Sleep(late) // the body's end comes after the per-try timeout
		_, _ = io.WriteString(c, "2\r\nte\r\n0\r\n\r\n")
		return false
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		w.headers(id, false, 0, ":status", "200")
		_ = w.fr.WriteData(id, false, []byte("la"))
		_ = w.bw.Flush()
		time.Sleep(late) // likewise (the connection's frames wait meanwhile)
		w.data(id, []byte("te"))
	})
	route := func(prefix, cluster string, timeout time.Duration) *routev3.Route {
		r := retryRoute(cluster, "5xx,reset", 1)
		r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
		r.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(perTry)
		if timeout > 0 {
			r.GetRoute().Timeout = durationpb.New(timeout)
		}
		return r
	}
	requests := []struct {
		path      string
		h2, wantC string
	}{
		{"/h1/slow", "", "200 late"},
		{"/h2/slow", "", "200 late"},
		{"/h1t/slow", "", "200 la"},
		{"/h2t/slow", "", "200 la"},
		{"/h1/slow", "h2", "200 late"},
		{"/h2/slow", "h2", "200 late"},
		{"/h1t/slow", "h2", "200 la reset"},
		{"/h2t/slow", "h2", "200 la reset"},
	}
	var names []string
	for _, r := range requests {
		names = append(names, r.path+" "+r.h2)
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, route("/h1/", "h1", 0), route("/h2/", "h2", 0),
				route("/h1t/", "h1", routeTimeout), route("/h2t/", "h2", routeTimeout))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for i, r := range requests {
			var got string
			if r.h2 == "" {
				_, got = interimGet(t, h.addr("egress"), r.path, false)
			} else {
				got = h2Body(dialH2(t, h.addr("egress")), 1, r.path)
			}
			res.answers[names[i]] = got
			if got != r.wantC {
				t.Errorf("%s, %s: answered %s; want %s", p.name, names[i], got, r.wantC)
			}
		}
		res.stats = h.countsBy("cluster", []string{"h1", "h2"}, []string{"upstream_rq_total", "upstream_rq_per_try_timeout", "upstream_rq_timeout", "upstream_rq_retry"})
		if want := "h1.upstream_rq_total 4\nh1.upstream_rq_per_try_timeout 0\nh1.upstream_rq_timeout 2\nh1.upstream_rq_retry 0\n" +
			"h2.upstream_rq_total 4\nh2.upstream_rq_per_try_timeout 0\nh2.upstream_rq_timeout 2\nh2.upstream_rq_retry 0"; res.stats != want {
			t.Errorf("%s: counters\n%s\nwant\n%s", p.name, res.stats, want)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// h2Body sends a GET for path on stream id of cl and tells how the
// proxy answered it, as h2StreamEnd.
func h2Body(cl *h2Client, id uint32, path string) string {
	defer cl.c.Close()
	_ = cl.headers(id, path)
	_ = cl.bw.Flush()
	return h2StreamEnd(cl, id)
}

// h2StreamEnd reads stream id of cl to its end and tells how the proxy
// answered it: "<status> <body>" (the last HEADERS with a status; trailers
// end it), then " reset" if the stream was reset, " (the connection
// ended)" or " (no end)" within 10 s.
func h2StreamEnd(cl *h2Client, id uint32) string {
	var got, body string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-cl.frames:
			switch {
			case !ok:
				return got + " " + body + " (the connection ended)"
			case f.stream != id:
			case f.typ == http2.FrameHeaders:
				if f.status != "" {
					got = f.status
				}
				if f.end {
					return got + " " + body
				}
			case f.typ == http2.FrameData:
				body += string(f.data)
				if f.end {
					return got + " " + body
				}
			case f.typ == http2.FrameRSTStream:
				return got + " " + body + " reset"
			}
		case <-timeout:
			return got + " " + body + " (no end)"
		}
	}
}

// TestResetAfterInterimSamePaths: a reset or a protocol error after an
// upstream's 100 (or 102, 103, 104) is answered as before it, but logged
// with details upstream_reset_after_response_started{...} on every path,
// as Envoy's router says once a 1xx it took started the response
// (Filter::onUpstreamReset: LateUpstreamReset); without the 1xx, or after
// a 199 it drops unseen, upstream_reset_before_response_started{...}. A
// protocol error is answered 502 (route.UpstreamProtocolErrorStatus), a
// reset 503. From an HTTP/1.1 upstream and an HTTP/2 one. Both paths
// logged upstream_reset_before_response_started after the 1xx too.
func TestResetAfterInterimSamePaths(t *testing.T) {
	h1Scripts := map[string]string{
		"/h1/reset":    "HTTP/1.1 100 Continue\r\n\r\n", // then closed
		"/h1/reset0":   "",
		"/h1/reset199": "HTTP/1.1 199 Other\r\n\r\n",
		"/h1/bad":      "HTTP/1.1 103 Early Hints\r\n\r\ngarbage\r\n\r\n",
		"/h1/bad0":     "garbage\r\n\r\n",
	}
	h1 := h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool { // the script written, the connection closes
		_, _ = io.WriteString(c, h1Scripts[req.URL.Path])
		return false
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		switch strings.Join(r.values(":path"), "") {
		case "/h2/reset":
			w.headers(id, false, 0, ":status", "100")
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/reset0":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/bad": // a 1xx ending the stream: a protocol error
			w.headers(id, false, 0, ":status", "103")
			w.headers(id, true, 0, ":status", "103")
		case "/h2/bad0":
			w.headers(id, true, 0, ":status", "103")
		}
	})
	const (
		uc  = "503 upstream connect error or disconnect/reset before headers. reset reason: connection termination"
		ur  = "503 upstream connect error or disconnect/reset before headers. reset reason: remote reset"
		upe = "502 upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	)
	requests := []struct{ path, want, log string }{
		{"/h1/reset", uc, "503 UC upstream_reset_after_response_started{connection_termination}"},
		{"/h1/reset0", uc, "503 UC upstream_reset_before_response_started{connection_termination}"},
		{"/h1/reset199", uc, "503 UC upstream_reset_before_response_started{connection_termination}"},
		{"/h1/bad", upe, "502 UPE upstream_reset_after_response_started{protocol_error}"},
		{"/h1/bad0", upe, "502 UPE upstream_reset_before_response_started{protocol_error}"},
		{"/h2/reset", ur, "503 UR upstream_reset_after_response_started{remote_reset}"},
		{"/h2/reset0", ur, "503 UR upstream_reset_before_response_started{remote_reset}"},
		{"/h2/bad", upe, "502 UPE upstream_reset_after_response_started{protocol_error}"},
		{"/h2/bad0", upe, "502 UPE upstream_reset_before_response_started{protocol_error}"},
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1/", "h1"), routeTo("/h2/", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			_, got := interimGet(t, h.addr("egress"), r.path, false)
			res.answers[r.path] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, r.path, got, r.want)
			}
		}
		res.log = awaitLog(t, logFile, len(requests))
		for _, r := range requests {
			if want := r.path + " " + r.log; !slices.Contains(strings.Split(res.log, "\n"), want) {
				t.Errorf("%s: access log\n%s\nwant a line %q", p.name, res.log, want)
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}
