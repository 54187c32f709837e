package proxy

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// targetEcho answers with the request line's target as the upstream
// received it, and its protocol.
func targetEcho(w http.ResponseWriter, r *http.Request) {
	_, _ = fmt.Fprintf(w, "%s %s", r.Proto, r.RequestURI)
}

// h2Ask sends GET path (authority x) on stream id of c and tells the
// answer: "status body", "RST_STREAM <code>", "the connection ended" or
// "no answer" within 10 s.
func h2Ask(c *h2Client, id uint32, path string) string {
	_ = c.headers(id, path)
	_ = c.bw.Flush()
	var status string
	var body []byte
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-c.frames:
			switch {
			case !ok:
				return "the connection ended"
			case f.stream != id:
				continue
			case f.typ == http2.FrameRSTStream:
				return "RST_STREAM " + f.code.String()
			case f.typ == http2.FrameHeaders:
				status = f.status
			case f.typ == http2.FrameData:
				body = append(body, f.data...)
			}
			if f.end {
				return status + " " + string(body)
			}
		case <-timeout:
			return "no answer"
		}
	}
}

// TestRequestTargetSamePaths: the upstream gets the request's path and
// query as Envoy sends them, on every path, from HTTP/1.1 and h2c
// clients, to HTTP/1.1 and HTTP/2 clusters, with and without a prefix
// rewrite: the query as received, whatever it holds (';' separators,
// malformed escapes, empty parameters), and the path as received, or with
// normalize_path (App Mesh's connection managers have it, and
// merge_slashes) as Envoy's canonicalisation leaves it: bytes a URL path
// may not hold escaped, '\' a '/', dot segments removed, escaped letters,
// digits and "-._~" decoded (routed so too), other escapes kept as
// written. A target with a space or a byte above 0x7e is refused 400 by
// the HTTP/1.1 codec, as by Envoy's (Balsa, http-parser's URL rules),
// and served over HTTP/2 (nghttp2 takes such bytes in :path). The access
// log's %REQ(:PATH)% is the path the upstream got, and
// %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% the normalised one before the
// rewrite, as Envoy logs them; a :path header matcher sees that path and
// the query. (The goroutine path sent the path escaped
// again as Go's URL writes it, and re-encoded such queries; the loops sent
// the path as received without normalize_path.)
func TestRequestTargetSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %UPSTREAM_CLUSTER%\n"}}
	clusters := twoUpstreams(t, http.HandlerFunc(targetEcho))
	var routes []*routev3.Route
	for _, n := range []string{"1", "2"} {
		rw := routeTo("/"+n+"/rw/", "h"+n)
		rw.GetRoute().PrefixRewrite = "/up/"
		// A :path header matcher sees the path as the routes do.
		hm := routeTo("/"+n+"/hm/", "h"+n)
		hm.GetRoute().PrefixRewrite = "/matched/"
		hm.Match.Headers = []*routev3.HeaderMatcher{{Name: ":path", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "/" + n + "/hm/a|b?q|r"}}}}}
		routes = append(routes, rw, hm, routeTo("/"+n+"/", "h"+n))
	}
	normalize := func(m *hcmv3.HttpConnectionManager) { m.MergeSlashes, m.NormalizePath = true, wrapperspb.Bool(true) }
	// Each target and what Envoy makes of it: without and with
	// normalize_path and merge_slashes; "400" is the HTTP/1.1 codec's
	// refusal.
	type target struct{ sent, plain, normalized, h1 string }
	targets := []target{
		{"/a|b{c}", "/a|b{c}", "/a%7Cb%7Bc%7D", ""},
		{"/a%7Cb", "/a%7Cb", "/a%7Cb", ""},
		{"/p?x=1;y=2", "/p?x=1;y=2", "/p?x=1;y=2", ""},
		{"/p?bad=%zz", "/p?bad=%zz", "/p?bad=%zz", ""},
		{"/p?a=b&&c", "/p?a=b&&c", "/p?a=b&&c", ""},
		{"/%2F", "/%2F", "/%2F", ""},
		{"/a%2eb/%2E%2e/c%2E", "/a%2eb/%2E%2e/c%2E", "/c.", ""},
		{"/%61b%2D%7e%2541%7c", "/%61b%2D%7e%2541%7c", "/ab-~%2541%7c", ""},
		{"/q|?r|s", "/q|?r|s", "/q%7C?r|s", ""},
		{"/x/..//y\\z^`\"<>", "/x/..//y\\z^`\"<>", "/y/z%5E%60%22%3C%3E", ""},
		{"/a b", "", "", "400"},
		{"/\xc3\xa4", "/\xc3\xa4", "/%C3%A4", "400"},
	}
	type exchange struct {
		listener, client, target string
		want                     string // the upstream's answer: "200 <proto> <target>"; or the refusal's status
		log                      string // the access log's line but %PROTOCOL%
	}
	var exchanges []exchange
	for _, l := range []string{"plain", "norm"} {
		for _, tg := range targets {
			got := tg.plain
			if l == "norm" {
				got = tg.normalized
			}
			for _, n := range []string{"1", "2"} {
				proto := map[string]string{"1": "HTTP/1.1", "2": "HTTP/2.0"}[n]
				for _, client := range []string{"h1", "h2c"} {
					if client == "h1" && tg.h1 != "" {
						exchanges = append(exchanges, exchange{l, client, "/" + n + tg.sent, tg.h1, ""})
						exchanges = append(exchanges, exchange{l, client, "/" + n + "/rw" + tg.sent, tg.h1, ""})
						continue
					}
					if got == "" {
						continue // not a valid :path: nghttp2's rules, tested elsewhere
					}
					up := "/" + n + got
					exchanges = append(exchanges, exchange{l, client, "/" + n + tg.sent, "200 " + proto + " " + up,
						up + " " + up + " 200 h" + n})
					rw := "/up" + got
					exchanges = append(exchanges, exchange{l, client, "/" + n + "/rw" + tg.sent, "200 " + proto + " " + rw,
						rw + " /" + n + "/rw" + got + " 200 h" + n})
				}
			}
		}
	}
	for _, n := range []string{"1", "2"} {
		proto := map[string]string{"1": "HTTP/1.1", "2": "HTTP/2.0"}[n]
		for _, client := range []string{"h1", "h2c"} {
			// Matched on the path as received; with normalize_path, on
			// the escaped one, which the matcher does not take.
			exchanges = append(exchanges,
				exchange{"plain", client, "/" + n + "/hm/a|b?q|r", "200 " + proto + " /matched/a|b?q|r", "/matched/a|b?q|r /" + n + "/hm/a|b?q|r 200 h" + n},
				exchange{"norm", client, "/" + n + "/hm/a|b?q|r", "200 " + proto + " /" + n + "/hm/a%7Cb?q|r",
					"/" + n + "/hm/a%7Cb?q|r /" + n + "/hm/a%7Cb?q|r 200 h" + n},
				// Routed on the path as received; with normalize_path,
				// on the decoded one: the rewriting route's.
				exchange{"plain", client, "/" + n + "/%72w/%61b", "200 " + proto + " /" + n + "/%72w/%61b",
					"/" + n + "/%72w/%61b /" + n + "/%72w/%61b 200 h" + n},
				exchange{"norm", client, "/" + n + "/%72w/%61b", "200 " + proto + " /up/ab", "/up/ab /" + n + "/rw/ab 200 h" + n})
		}
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logs := map[string]string{"plain": filepath.Join(t.TempDir(), "plain.log"), "norm": filepath.Join(t.TempDir(), "norm.log")}
			h.push(append([]types.Resource{
				httpListener("plain", httpManager("plain", "rds", withAccessLog(logs["plain"], format))),
				httpListener("norm", httpManager("norm", "rds", withAccessLog(logs["norm"], format), normalize)),
				routeConfig("rds", vhost("v", []string{"*"}, routes...))}, clusters...)...)
			res := pathResult{answers: map[string]string{}}
			h2 := map[string]*h2Client{"plain": dialH2(t, h.addr("plain")), "norm": dialH2(t, h.addr("norm"))}
			id := map[string]uint32{"plain": 1, "norm": 1}
			lines := map[string]int{}
			var wantLog []string
			for _, e := range exchanges {
				var got string
				if e.client == "h1" {
					got = getRewritten(t, h.addr(e.listener), e.target, "")
					if status, _, _ := strings.Cut(got, " "); status != "200" {
						got = status // a refusal: its status
					}
				} else {
					got = h2Ask(h2[e.listener], id[e.listener], e.target)
					id[e.listener] += 2
				}
				name := e.listener + " " + e.client + " " + e.target
				res.answers[name] = got
				if got != e.want {
					t.Errorf("%s: answered %q, want %q (as Envoy)", name, got, e.want)
				}
				lines[e.listener]++
				if e.log != "" {
					proto := map[string]string{"h1": "HTTP/1.1", "h2c": "HTTP/2"}[e.client]
					up, rest, _ := strings.Cut(e.log, " 200 ")
					wantLog = append(wantLog, e.listener+": "+up+" "+proto+" 200 "+rest)
				}
			}
			// The loops route, send and log a normalised path themselves,
			// HTTP/1.1's too (App Mesh's listeners normalise).
			for _, l := range []string{"plain", "norm"} {
				if lis := h.listener(l); lis.OnLoops() && !p.h2Goroutines && lis.HandedOff() != 0 {
					t.Errorf("%s: %d connections handed off, want the loops to serve them all", l, lis.HandedOff())
				}
			}
			for _, l := range []string{"plain", "norm"} {
				log := awaitLog(t, logs[l], lines[l])
				res.log += l + ":\n" + log
				for _, w := range wantLog {
					if x, ok := strings.CutPrefix(w, l+": "); ok && !slices.Contains(strings.Split(log, "\n"), x) {
						t.Errorf("%s access log\n%s\nwithout %q (as Envoy logs it)", l, log, x)
					}
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestPathFragmentRefusedSamePaths: a request target holding a '#' (in
// its path or its query) is refused 400 by the connection manager before
// it routes the request, whatever its normalisation, as Envoy's
// maybeNormalizePath refuses it (http_reject_path_with_fragment, on by
// default), and so is, with normalize_path, a path holding "%00", which
// Envoy's canonicalisation refuses: path_normalization_failed, the target
// logged as received, on every path, from HTTP/1.1 and h2c clients. (Go
// read the '#' as part of the path: the upstream got it, raw or escaped;
// "%00" went upstream.)
func TestPathFragmentRefusedSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER%\n"}}
	clusters := twoUpstreams(t, http.HandlerFunc(targetEcho))
	normalize := func(m *hcmv3.HttpConnectionManager) { m.MergeSlashes, m.NormalizePath = true, wrapperspb.Bool(true) }
	// With normalize_path, an escaped NUL in the path is refused too
	// (Chromium's canonicalisation fails), in the query not.
	targets := []string{"/1/a#b", "/1/a?q=#f", "/2/x//y#", "/1/ok", "/1/a%00b", "/1/ok?q=%00"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logs := map[string]string{"plain": filepath.Join(t.TempDir(), "plain.log"), "norm": filepath.Join(t.TempDir(), "norm.log")}
			h.push(append([]types.Resource{
				httpListener("plain", httpManager("plain", "rds", withAccessLog(logs["plain"], format))),
				httpListener("norm", httpManager("norm", "rds", withAccessLog(logs["norm"], format), normalize)),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/1/", "h1"), routeTo("/2/", "h2")))}, clusters...)...)
			res := pathResult{answers: map[string]string{}}
			for _, l := range []string{"plain", "norm"} {
				h2 := dialH2(t, h.addr(l))
				var id uint32 = 1
				var want []string
				for _, tg := range targets {
					for _, client := range []string{"h1", "h2c"} {
						var got string
						if client == "h1" {
							got = getRewritten(t, h.addr(l), tg, "")
						} else {
							got = h2Ask(h2, id, tg)
							id += 2
						}
						name := l + " " + client + " " + tg
						res.answers[name] = got
						status, _, _ := strings.Cut(got, " ")
						line := tg + " 400 path_normalization_failed -"
						if strings.HasPrefix(tg, "/1/ok") || tg == "/1/a%00b" && l == "plain" {
							line = tg + " 200 via_upstream h1"
							if status != "200" {
								t.Errorf("%s: answered %q, want 200 (as Envoy)", name, got)
							}
						} else if status != "400" {
							t.Errorf("%s: answered %q, want 400 (as Envoy)", name, got)
						}
						want = append(want, line)
					}
				}
				log := awaitLog(t, logs[l], len(want))
				res.log += l + ":\n" + log
				for _, w := range want {
					if !slices.Contains(strings.Split(log, "\n"), w) {
						t.Errorf("%s access log\n%s\nwithout %q (as Envoy logs it)", l, log, w)
					}
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
