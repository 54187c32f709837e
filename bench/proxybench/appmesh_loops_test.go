//go:build linux

package main

import (
	"bytes"
	"log/slog"
	"reflect"
	"testing"
)

// TestLoopPlacement writes the proxy's placement lines with log/slog's text
// handler, as weft proxy does (internal/proxy/apply.go), mixed with other
// lines and an access log line, and reads them back: the last line for a
// listener wins (a listener rebuilt by a later update).
func TestLoopPlacement(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("xds connected", "server", "127.0.0.1:15128")
	log.Info("listener stays off the event loops", "listener", "lds_ingress_0.0.0.0_15000", "why", "access logs with original_dst")
	log.Info("listener stays off the event loops", "listener", "lds_egress_0.0.0.0_15001", "why", "tls_inspector")
	buf.WriteString(`[2026-12-03T19:00:00.000Z] "GET / HTTP/1.1" 200 - 0 4 1 1 "-" "Go-http-client/1.1" "x" "server.bench.local:8080" "127.0.0.1:8080"` + "\n")
	log.Info("listener on the event loops", "listener", "lds_ingress_0.0.0.0_15000")
	log.Warn("something else", "msg2", `a "quoted" value`)

	got := loopPlacement(buf.String())
	want := []placement{
		{listener: "lds_egress_0.0.0.0_15001", why: "tls_inspector"},
		{listener: "lds_ingress_0.0.0.0_15000", loops: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loopPlacement:\n got %+v\nwant %+v\nfrom:\n%s", got, want, buf.String())
	}
}

func TestServedStats(t *testing.T) {
	body := "cluster.cds_egress_bench_server_http_8080.upstream_rq_total: 12\n" +
		"cluster.cds_egress_bench_server_http_8080.upstream_cx_total: 3\n" +
		"http.egress.downstream_rq_total: 12\n" +
		"http.egress.downstream_rq_2xx: 12\n" +
		"listener.0.0.0.0_15000.no_filter_chain_match: 0\n" +
		"server.live: 1\n"
	got := servedStats(body)
	want := []string{
		"cluster.cds_egress_bench_server_http_8080.upstream_rq_total: 12",
		"http.egress.downstream_rq_total: 12",
		"listener.0.0.0.0_15000.no_filter_chain_match: 0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("servedStats:\n got %q\nwant %q", got, want)
	}
}

func TestStatValue(t *testing.T) {
	body := "http.egress.downstream_rq_total_x: 7\nhttp.egress.downstream_rq_total: 12\nhttp.ingress.downstream_rq_total: 11\n"
	for name, want := range map[string]int64{
		"http.egress.downstream_rq_total":  12,
		"http.ingress.downstream_rq_total": 11,
		"http.egress.downstream_rq":        -1,
	} {
		if got := statValue(body, name); got != want {
			t.Errorf("statValue(%s) = %d, want %d", name, got, want)
		}
	}
}
