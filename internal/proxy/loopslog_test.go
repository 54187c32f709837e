package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/evloop"
)

// BenchmarkLoopLogLine: one access log line in Envoy's default format from
// a loops' record, as loggedRouter builds it (record), against reading
// the heads again with net/http as it did before (readRequest; its
// bufio readers were pooled, as here).
func BenchmarkLoopLogLine(b *testing.B) {
	head := []byte("GET /color?x=1 HTTP/1.1\r\nHost: colors.local\r\nUser-Agent: hey/0.0.1\r\nAccept: */*\r\n" +
		"X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: 5db07a2f-cd8a-467f-a491-60125f78c6fa\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Envoy-Upstream-Service-Time: 0\r\nServer: envoy\r\n\r\n")
	rec := &evloop.LogRecord{Start: time.Now(), Head: head, ResponseHead: resp, Code: 200, Method: head[:3], Target: head[4:14],
		Remote: netip.MustParseAddrPort("127.0.0.1:5555"), Local: netip.MustParseAddrPort("127.0.0.1:15001"),
		Host: netip.MustParseAddrPort("127.0.0.1:9080"), Cluster: "c", Attempts: 1,
		RemoteText: "127.0.0.1:5555", LocalText: "127.0.0.1:15001"}
	for l := bytes.Split(head[bytes.IndexByte(head, '\n')+1:len(head)-4], []byte("\r\n")); len(l) > 0; l = l[1:] {
		n, v, _ := bytes.Cut(l[0], []byte(": "))
		rec.Headers = append(rec.Headers, evloop.HeaderField{Name: n, Value: v})
	}
	f, err := accesslog.CompileText(accesslog.DefaultFormat, false)
	if err != nil {
		b.Fatal(err)
	}
	entry := func(e *accesslog.Entry) {
		e.Start, e.Duration, e.RequestDuration, e.ResponseDuration = rec.Start, rec.Duration, -1, rec.ResponseDuration
		e.ResponseCode, e.Attempts, e.UpstreamCluster = rec.Code, rec.Attempts, rec.Cluster
		e.DownstreamRemote, e.DownstreamLocal, e.DownstreamDirectPeer = rec.RemoteText, rec.LocalText, rec.RemoteText
		e.UpstreamHost = rec.Host.String()
	}
	var out []byte
	b.Run("record", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := loopHead{rec}
			e := accesslog.Entry{Head: h, Protocol: h.proto(), ResponseHeader: respHead(rec.ResponseHead)}
			entry(&e)
			out = f.Append(out[:0], &e)
		}
	})
	b.Run("readRequest", func(b *testing.B) {
		b.ReportAllocs()
		var rd bytes.Reader
		br := bufio.NewReaderSize(&rd, 4096)
		reset := func(p []byte) *bufio.Reader { rd.Reset(p); br.Reset(&rd); return br }
		for b.Loop() {
			req, err := http.ReadRequest(reset(head))
			if err != nil {
				b.Fatal(err)
			}
			e := accesslog.Entry{Request: req, Protocol: req.Proto}
			if r, err := http.ReadResponse(reset(resp), req); err == nil {
				e.ResponseHeader = r.Header
			}
			entry(&e)
			out = f.Append(out[:0], &e)
		}
	})
}
