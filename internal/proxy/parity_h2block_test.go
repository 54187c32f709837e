package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestH2BlockInSmallFramesSamePaths: a request's header block sent in
// HEADERS and CONTINUATION frames smaller than the maximum (512 bytes
// each; a client may send them so), its list under the advertised
// SETTINGS_MAX_HEADER_LIST_SIZE (route.Limits.H2ListSize), is read whole
// on every path, as x/net's server and Envoy's codec read it: served
// within max_request_headers_kb and max_headers_count, its stream reset
// over them, and the connection carries on with the next request. The
// loops stopped waiting for a block once max_request_headers_kb of it,
// frame headers and HPACK's encoding included, was in, and failed the
// connection (GOAWAY PROTOCOL_ERROR) and every stream on it: a request
// within the limits too, whose block is larger than its list.
func TestH2BlockInSmallFramesSamePaths(t *testing.T) {
	echo := echoHopUpstream(t)
	type field = [2]string
	pseudo := []field{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/echo"}}
	// "~" is longer in Huffman's code than as it is: HPACK sends the
	// values as they are.
	big := func(n, size int) []field {
		fs := append([]field(nil), pseudo...)
		for i := range n {
			fs = append(fs, field{fmt.Sprintf("x-big-%02d", i), strings.Repeat("~", size)})
		}
		return fs
	}
	requests := []struct {
		name   string
		fields []field
		want   string
	}{
		// 94 fields, 61,062 bytes of names and values: within 100 fields
		// and 60 KiB; a 61,395-byte block, 62,475 with its frames' headers.
		{"a list within the limits", big(90, 670), "200, then 200"},
		// 62,038 bytes: over 60 KiB, under 60 KiB + 32 bytes for each of
		// 100 fields.
		{"a list over 60 KiB", big(4, 15500), "RST_STREAM INTERNAL_ERROR, then 200"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			cl := dialH2(t, h.addr("egress"))
			var answers []string
			for _, s := range []struct {
				id     uint32
				fields []field
			}{{1, r.fields}, {3, pseudo}} {
				cl.hbuf.Reset()
				for _, f := range s.fields {
					_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
				}
				block := cl.hbuf.Bytes()
				const frame = 512
				first := block[:min(frame, len(block))]
				_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: first, EndStream: true,
					EndHeaders: len(first) == len(block)})
				for rest := block[len(first):]; len(rest) > 0; {
					n := min(frame, len(rest))
					_ = cl.fr.WriteContinuation(s.id, n == len(rest), rest[:n])
					rest = rest[n:]
				}
				_ = cl.bw.Flush()
				answers = append(answers, awaitH2Answer(cl, s.id))
			}
			_ = cl.c.Close()
			answer := strings.Join(answers, ", then ")
			res.answers[r.name] = answer
			if p.goroutines && answer != r.want {
				t.Errorf("%s: the goroutine path answered %s; want %s", r.name, answer, r.want)
			}
		}
		if !p.h2Goroutines {
			if l := h.listener("egress"); !l.OnLoops() {
				t.Errorf("%s: egress is not on the loops", p.name)
			}
		}
		res.stats = fmt.Sprintf("downstream_cx_total %d, http2.header_overflow %d",
			h.stat("http.egress.downstream_cx_total"), h.stat("http2.header_overflow"))
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// awaitH2Answer waits for the answer to stream id: its status, its
// reset, the connection's GOAWAY or end.
func awaitH2Answer(cl *h2Client, id uint32) string {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-cl.frames:
			switch {
			case !ok:
				return "the connection ended"
			case f.typ == http2.FrameGoAway:
				return "GOAWAY " + f.code.String()
			case f.stream != id:
			case f.typ == http2.FrameHeaders:
				return f.status
			case f.typ == http2.FrameRSTStream:
				return "RST_STREAM " + f.code.String()
			}
		case <-timeout:
			return "no answer"
		}
	}
}

// TestH2ListSizeBoundedByHeadBytes: the SETTINGS_MAX_HEADER_LIST_SIZE
// every path advertises, and buffers and decodes a request's header list
// up to, is bounded by max_request_headers_kb however large
// max_headers_count is: a list within both limits has at most a field for
// each of its bytes (a field's name is one byte or more), so 32 bytes more
// for each of them at most (route.Limits.H2ListSize). With
// max_headers_count at its largest (4294967295, which Envoy's validation
// takes) it was 2 GiB: a client could have 2 GiB of one stream's fields
// held by either path, and the loops' read buffer grow to twice that.
func TestH2ListSizeBoundedByHeadBytes(t *testing.T) {
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		many := func(m *hcmv3.HttpConnectionManager) {
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(math.MaxUint32)}
		}
		h.push(httpListener("egress", httpManager("egress", "rds")), httpListener("many", httpManager("many", "rds", many)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", "127.0.0.1:1"))
		for name, want := range map[string]uint32{"egress": 60<<10 + 32*100, "many": 60 << 10 * 33} {
			cl := dialH2(t, h.addr(name))
			if got := cl.settings(t).maxList; got != want {
				t.Errorf("%s, %s: SETTINGS_MAX_HEADER_LIST_SIZE %d, want %d", p.name, name, got, want)
			}
			_ = cl.c.Close()
		}
	}
}

// TestH2ResponseBlockInSmallFramesSamePaths: an HTTP/2 upstream's
// response whose header block comes in small frames (64 bytes of it
// each; an upstream may send them so), its list within the 64 KiB the
// proxy advertises as SETTINGS_MAX_HEADER_LIST_SIZE and within Envoy's
// max_response_headers_kb (60 KiB) and max_headers_count, is read whole
// and relayed on every path, to an HTTP/1.1 client and an HTTP/2 one, and
// the upstream connection carries on: a stream waiting on it (/hold,
// answered once /big was) is answered too. The loops stopped waiting for
// a block at 60 KiB of frames, headers included (its 56 KiB list took 65
// KiB of them), and failed the upstream connection and every stream on
// it; the goroutine path's transport (x/net's), as Envoy's codec, reads a
// block frame by frame up to its list limit.
func TestH2ResponseBlockInSmallFramesSamePaths(t *testing.T) {
	// 56 fields of 1,008 bytes of name and value (56,448 bytes; 58,240 as
	// HPACK counts a list, 32 bytes more a field): "~" is longer in
	// Huffman's code than as it is, so HPACK sends the values as they
	// are, and each field is new to its table.
	big := []string{":status", "200", "content-length", "3"}
	for i := range 56 {
		big = append(big, fmt.Sprintf("x-big-%02d", i), strings.Repeat("~", 1000))
	}
	respond := func(received chan<- string) func(w *rawH2Writer, id uint32, r *rawH2Request) {
		var mu sync.Mutex
		held := map[*rawH2Writer][]uint32{} // /hold streams by connection; protected by mu
		return func(w *rawH2Writer, id uint32, r *rawH2Request) {
			path := strings.Join(r.values(":path"), "")
			switch path {
			case "/hold":
				mu.Lock()
				held[w] = append(held[w], id)
				mu.Unlock()
			case "/big":
				w.headers(id, false, 64, big...)
				w.data(id, []byte("big"))
				mu.Lock()
				ids := held[w]
				delete(held, w)
				mu.Unlock()
				for _, h := range ids {
					w.headers(h, false, 0, ":status", "200", "content-length", "4")
					w.data(h, []byte("held"))
				}
			default:
				w.headers(id, false, 0, ":status", "200", "content-length", "2")
				w.data(id, []byte("ok"))
			}
			select {
			case received <- path:
			default:
			}
		}
	}
	// answer is a response as the test sees it: its status, how many
	// x-big-* fields it has, and its body.
	answer := func(resp *http.Response, err error) string {
		if err != nil {
			return err.Error()
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		n := 0
		for k, vv := range resp.Header {
			if strings.HasPrefix(k, "X-Big-") && len(vv) == 1 && len(vv[0]) == 1000 {
				n++
			}
		}
		return fmt.Sprintf("%d x-big %d %q %v", resp.StatusCode, n, body, err)
	}
	const (
		wantBig  = `200 x-big 56 "big" <nil>`
		wantHeld = `200 x-big 0 "held" <nil>`
		wantOK   = `200 x-big 0 "ok" <nil>`
	)
	names := []string{"HTTP/1.1 /big", "HTTP/1.1 /small", "HTTP/2 /hold", "HTTP/2 /big"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		received := make(chan string, 16)
		up := rawH2Upstream(t, respond(received))
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "up"))), edsCluster("up", h2Upstream), cla("up", up))
		res := pathResult{answers: map[string]string{}}

		// An HTTP/1.1 client: /big, then /small on the same connection.
		c := dialRaw(t, h.addr("egress"))
		_, _ = io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		for _, n := range names[:2] {
			resp, err := http.ReadResponse(br, nil)
			res.answers[n] = answer(resp, err)
		}
		_ = c.Close()

		// An HTTP/2 client: /hold, then /big while /hold waits on the
		// same upstream connection.
		for len(received) > 0 {
			<-received
		}
		cl := h2cClient(t)
		get := func(path string) string {
			req, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return answer(cl.Do(req.WithContext(ctx)))
		}
		held := make(chan string, 1)
		go func() { held <- get("/hold") }() // ends within get's timeout
		select {
		case <-received:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: /hold did not reach the upstream", p.name)
		}
		res.answers["HTTP/2 /big"] = get("/big")
		res.answers["HTTP/2 /hold"] = <-held

		for n, want := range map[string]string{"HTTP/1.1 /big": wantBig, "HTTP/1.1 /small": wantOK, "HTTP/2 /hold": wantHeld,
			"HTTP/2 /big": wantBig} {
			if res.answers[n] != want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, n, res.answers[n], want)
			}
		}
		// Not upstream_cx_total: each loop keeps its own connections.
		var stats []string
		for _, n := range []string{"upstream_rq_total", "upstream_rq_2xx", "upstream_rq_rx_reset", "upstream_rq_tx_reset"} {
			stats = append(stats, fmt.Sprintf("%s %d", n, h.stat("cluster.up."+n)))
		}
		res.stats = strings.Join(stats, ", ")
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// TestH2BlockPastWaitSamePaths: a header block whose frames pass what
// the loops wait for (h2conn.blockMax, twice the advertised list size)
// is taken up to the frame that passes it, whatever the limits, and the
// connection fails at once (GOAWAY PROTOCOL_ERROR) on every path, as
// x/net's server fails it (that frame is over twice what is left of the
// list). With max_request_headers_kb 4 and max_headers_count 128 (an 8
// KiB list, a 16 KiB wait), the read buffer the loops may grow to (32
// KiB) had no room for a 16 KiB HEADERS frame and the 16 KiB
// CONTINUATION after it: full, the connection stopped reading and ended
// at the request headers timeout, without GOAWAY.
func TestH2BlockPastWaitSamePaths(t *testing.T) {
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		small := func(m *hcmv3.HttpConnectionManager) {
			m.MaxRequestHeadersKb = wrapperspb.UInt32(4)
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(128)}
		}
		h.push(httpListener("egress", httpManager("egress", "rds", small)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", "127.0.0.1:1"))
		cl := dialH2(t, h.addr("egress"))
		if got := cl.settings(t).maxList; got != 8<<10 {
			t.Fatalf("%s: SETTINGS_MAX_HEADER_LIST_SIZE %d, want 8192", p.name, got)
		}
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
			_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for i := range 10 {
			_ = cl.enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-big-%d", i), Value: strings.Repeat("~", 4000)})
		}
		block := cl.hbuf.Bytes()
		first := block[:16<<10-9] // the HEADERS frame is the whole wait
		_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true})
		_ = cl.fr.WriteContinuation(1, true, block[len(first):len(first)+16<<10])
		_ = cl.bw.Flush()
		start := time.Now()
		answer := awaitH2Answer(cl, 1)
		if took := time.Since(start); took > 2*time.Second {
			answer += fmt.Sprintf(" after %v", took.Round(time.Second))
		}
		_ = cl.c.Close()
		if p.goroutines && answer != "GOAWAY PROTOCOL_ERROR" {
			t.Errorf("the goroutine path answered %s; want GOAWAY PROTOCOL_ERROR", answer)
		}
		results[p.name] = pathResult{answers: map[string]string{"block": answer}}
	}
	sameAsGoroutinePath(t, results, []string{"block"})
}
