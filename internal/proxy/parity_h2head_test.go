package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// HTTP/2 request heads on every path: header list limits, the list as
// sent in pieces, and :scheme.

// TestH2HeadLimitsSamePaths: an HTTP/2 (h2c) request whose header list
// passes max_request_headers_kb or max_headers_count (the pseudo-headers
// counted, as Envoy's HTTP/2 codec counts them) is reset with
// INTERNAL_ERROR, counted as a request reset and in http2.header_overflow,
// and logged without its headers, flagged DPE with http2.too_many_headers,
// alike on every path, as Envoy's codec resets it. Neither limit applied
// before (a list over the SETTINGS_MAX_HEADER_LIST_SIZE advertised for
// 60 KiB was answered 431; that still holds past the one advertised for
// the configured size).
func TestH2HeadLimitsSamePaths(t *testing.T) {
	echo := echoHopUpstream(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% " +
		"%UPSTREAM_CLUSTER%\n"}}
	type request struct {
		name, listener string
		header         http.Header
		want           string // the answer as Envoy gives it
	}
	many := func(n int) http.Header {
		h := http.Header{}
		for i := range n {
			h.Set(fmt.Sprintf("X-A-%d", i), "v")
		}
		h.Set("X-Keep", "1")
		return h
	}
	const reset = "reset INTERNAL_ERROR"
	requests := []request{
		{"five fields where five are allowed", "small", http.Header{"X-Keep": {"1"}}, `200 "X-Keep"`},
		{"six fields where five are allowed", "small", http.Header{"X-Keep": {"1"}, "X-Hop": {"2"}}, reset},
		{"cookies are not counted", "small", http.Header{"X-Keep": {"1"}, "Cookie": {"a=1", "b=2"}}, `200 "X-Keep"`},
		// Under max_headers_count fields: room for it under the advertised
		// list size (route.Limits.H2ListSize).
		{"a list over 1 KiB where 1 KiB is allowed", "kb", http.Header{"X-Keep": {strings.Repeat("k", 1100)}}, reset},
		{"te: trailers", "egress", http.Header{"X-Keep": {"1"}, "Te": {"trailers"}}, `200 "Te=trailers,X-Keep"`},
		{"100 fields where 100 are allowed", "egress", many(95), `200 "X-Keep"`},
		{"101 fields where 100 are allowed", "egress", many(96), reset},
	}
	counters := []string{"downstream_rq_total", "downstream_rq_http2_total", "downstream_rq_2xx", "downstream_rq_rx_reset"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		small := func(m *hcmv3.HttpConnectionManager) {
			m.MaxRequestHeadersKb = wrapperspb.UInt32(1)
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(5)}
		}
		kb := func(m *hcmv3.HttpConnectionManager) { m.MaxRequestHeadersKb = wrapperspb.UInt32(1) }
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format))),
			httpListener("small", httpManager("small", "rds", withAccessLog(logFile, format), small)),
			httpListener("kb", httpManager("kb", "rds", withAccessLog(logFile, format), kb)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		res := pathResult{answers: map[string]string{}}
		client := h2cClient(t)
		// No accept-encoding: each request has the fields it names.
		client.Transport.(*http.Transport).DisableCompression = true
		for _, r := range requests {
			req, _ := http.NewRequest(http.MethodGet, "http://"+h.addr(r.listener)+"/echo", nil)
			req.Header["User-Agent"] = []string{""} // none sent
			for k, vv := range r.header {
				req.Header[k] = vv
			}
			var answer string
			resp, err := client.Do(req)
			switch {
			case err != nil && strings.Contains(err.Error(), "INTERNAL_ERROR; received from peer"):
				answer = reset
			case err != nil:
				answer = err.Error()
			default:
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				answer = fmt.Sprintf("%d %q", resp.StatusCode, body)
			}
			res.answers[r.name] = answer
			if p.goroutines && answer != r.want {
				t.Errorf("%s: the goroutine path answered %s; want %s", r.name, answer, r.want)
			}
		}
		res.log = awaitLog(t, logFile, len(requests))
		res.stats = h.countsBy("http", []string{"egress", "small", "kb"}, counters) + "\n" + h.counts("", []string{"http2.header_overflow"})
		if p.goroutines {
			if n := strings.Count(res.log, "- - HTTP/2 0 DPE http2.too_many_headers 0 0 -\n"); n != 3 {
				t.Errorf("the goroutine path logged %d resets; want 3:\n%s", n, res.log)
			}
			if !strings.Contains(res.stats, "http2.header_overflow 3") || !strings.Contains(res.stats, "small.downstream_rq_rx_reset 1") ||
				!strings.Contains(res.stats, "kb.downstream_rq_rx_reset 1") {
				t.Errorf("the goroutine path counted\n%s", res.stats)
			}
		} else if l := h.listener("egress"); !l.OnLoops() {
			t.Errorf("%s: egress is not on the loops", p.name)
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestH2HeadListSamePaths: an HTTP/2 request's header list, sent as
// frames (Go's Transport never sends host, expect or trailer fields), is
// answered alike on every path.
//
// The limits count the list as the goroutine path sees it
// (route.H2List): x/net's server drops a host field sent beside
// :authority, trailer fields and "expect: 100-continue" before the
// handler, so neither path counts them (Envoy's codec does: this is a
// difference from it). The loops counted the fields received, and reset
// lists the goroutine path served.
//
// A list cut off at the advertised SETTINGS_MAX_HEADER_LIST_SIZE is
// answered 431 before the limits are applied, as x/net's server answers
// it; the loops reset it when the fields read before the cut were over
// the limits. The size advertised is the largest HPACK size a list within
// both limits has (route.Limits.H2ListSize): it was max_request_headers_kb
// plus 320 bytes, and a list of many short fields within the limits was
// answered 431 (HPACK counts 32 bytes a field) where Envoy serves it.
// That 431 is counted nowhere, as x/net's server sends it without
// calling the handler (Envoy would count it as a request): the loops
// counted it in downstream_rq_total, downstream_rq_4xx and
// downstream_rq_time.
func TestH2HeadListSamePaths(t *testing.T) {
	echo := echoHopUpstream(t)
	type field = [2]string
	pseudo := []field{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/echo"}}
	with := func(fs ...field) []field { return append(slices.Clone(pseudo), fs...) }
	short := func(n int) []field {
		fs := slices.Clone(pseudo)
		for i := range n {
			fs = append(fs, field{fmt.Sprintf("x-field-%02d", i), "vvvv"})
		}
		return fs
	}
	requests := []struct {
		name, listener string
		fields         []field
		want           string
	}{
		{"five fields", "small", with(field{"x-keep", "1"}), "200"},
		{"expect: 100-continue beside five fields", "small", with(field{"x-keep", "1"}, field{"expect", "100-continue"}), "200"},
		{"host beside :authority and five fields", "small", with(field{"x-keep", "1"}, field{"host", "x"}), "200"},
		{"trailer beside five fields", "small", with(field{"x-keep", "1"}, field{"trailer", "x-t"}), "200"},
		{"expect: other beside five fields", "small", with(field{"x-keep", "1"}, field{"expect", "other"}), "RST_STREAM INTERNAL_ERROR"},
		{"host for :authority and five fields", "small",
			[]field{{":method", "GET"}, {":scheme", "http"}, {":path", "/echo"}, {"host", "x"}, {"x-keep", "1"}}, "200"},
		{"six fields then a cut", "cut",
			with(field{"x-a", "1"}, field{"x-b", "2"}, field{"x-big", strings.Repeat("b", 1000)}), "431"},
		{"40 short fields within 1 KiB", "kb", short(36), "200"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		small := func(m *hcmv3.HttpConnectionManager) {
			m.MaxRequestHeadersKb = wrapperspb.UInt32(1)
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(5)}
		}
		kb := func(m *hcmv3.HttpConnectionManager) { m.MaxRequestHeadersKb = wrapperspb.UInt32(1) }
		h.push(httpListener("small", httpManager("small", "rds", small)), httpListener("kb", httpManager("kb", "rds", kb)),
			httpListener("cut", httpManager("cut", "rds", small)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		res := pathResult{answers: map[string]string{}}
		clients := map[string]*h2Client{}
		ids := map[string]uint32{}
		for _, r := range requests {
			cl := clients[r.listener]
			if cl == nil {
				cl = dialH2(t, h.addr(r.listener))
				clients[r.listener] = cl
			}
			ids[r.listener] += 2
			id := ids[r.listener] - 1
			answer := cl.ask(id, r.fields)
			res.answers[r.name] = answer
			if p.goroutines && answer != r.want {
				t.Errorf("%s: the goroutine path answered %s; want %s", r.name, answer, r.want)
			}
		}
		// The cut's listener served nothing else: what it counted, it
		// counted for the 431.
		res.stats = fmt.Sprintf("http2.header_overflow %d; cut: downstream_rq_total %d, downstream_rq_4xx %d, downstream_rq_time %s",
			h.stat("http2.header_overflow"), h.stat("http.cut.downstream_rq_total"), h.stat("http.cut.downstream_rq_4xx"),
			histogramCount(t, h, "envoy_http_downstream_rq_time", `envoy_http_conn_manager_prefix="cut"`))
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestH2SchemeCountedSamePaths: over TLS an HTTP/2 request's :scheme
// counts in its header list as https, on every path: the connection's
// scheme, since the goroutine path's request has no trace of the field
// (route.H2List). The goroutine path counted http there (x/net sets r.TLS
// only on a *tls.Conn), the loops https, so a list one byte under the
// limit with :scheme http was reset on the loops and served on the
// goroutine path. (Envoy counts the value sent: the second row is served
// there.)
func TestH2SchemeCountedSamePaths(t *testing.T) {
	echo := echoHopUpstream(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	// 1024 bytes counted with :scheme https: :method GET 10, :scheme 12,
	// :authority x 11, :path /echo 10, x-pad 5 and its value.
	pad := strings.Repeat("p", 1024-48)
	rows := []struct{ name, scheme, pad, want string }{
		{"https at the limit", "https", pad, "200"},
		{"https a byte over", "https", pad + "p", "RST_STREAM INTERNAL_ERROR"},
		{"http a byte over as https", "http", pad + "p", "RST_STREAM INTERNAL_ERROR"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		common := f.common(false)
		common.AlpnProtocols = []string{"h2", "http/1.1"}
		l := httpListener("tls", httpManager("tls", "rds", func(m *hcmv3.HttpConnectionManager) {
			m.MaxRequestHeadersKb = wrapperspb.UInt32(1)
		}))
		l.FilterChains[0].TransportSocket = tlsSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: common})
		h.push(l, routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		cfg := clientTLS(ca, "svc.local")
		cfg.NextProtos = []string{"h2"}
		tc := tls.Client(dialRaw(t, h.addr("tls")), cfg)
		if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("%s: handshake %v, protocol %q", p.name, err, tc.ConnectionState().NegotiatedProtocol)
		}
		cl := newH2Client(tc)
		res := pathResult{answers: map[string]string{}}
		for i, r := range rows {
			id := uint32(2*i + 1)
			answer := cl.ask(id, [][2]string{{":method", "GET"}, {":scheme", r.scheme}, {":authority", "x"}, {":path", "/echo"}, {"x-pad", r.pad}})
			res.answers[r.name] = answer
			if p.goroutines && answer != r.want {
				t.Errorf("%s: the goroutine path answered %s; want %s", r.name, answer, r.want)
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}
