package stats

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readAll(t *testing.T, pc net.PacketConn, want ...string) string {
	t.Helper()
	var got strings.Builder
	buf := make([]byte, 65536)
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := false
		for _, w := range want {
			if !strings.Contains(got.String(), w) {
				missing = true
			}
		}
		if !missing {
			return got.String()
		}
		_ = pc.SetReadDeadline(deadline)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("reading statsd packets: %v; got so far:\n%s\nwant %q", err, got.String(), want)
		}
		got.Write(buf[:n])
		got.WriteByte('\n')
	}
}

func TestDogStatsDOverUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s := NewStoreWithTags(Label{"appmesh.mesh", "m"})
	k, err := s.NewSink(SinkConfig{Network: "udp", Address: pc.LocalAddr().String(), Dog: true, FlushInterval: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sc := s.Scope("cluster.c.", "envoy_cluster_", Label{"envoy_cluster_name", "c"})
	sc.Counter("upstream_rq_total").Add(3)
	sc.Histogram("upstream_rq_time").Record(7)
	k.Flush()
	readAll(t, pc, "envoy.cluster.upstream_rq_total:3|c|#envoy.cluster_name:c,appmesh.mesh:m",
		"envoy.cluster.upstream_rq_time:7|ms|#envoy.cluster_name:c,appmesh.mesh:m")
	// Counters are deltas.
	sc.Counter("upstream_rq_total").Add(2)
	k.Flush()
	readAll(t, pc, "envoy.cluster.upstream_rq_total:2|c")
}

func TestStatsDOverUnixSocketAndDrops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "statsd.sock")
	pc, err := net.ListenPacket("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s := NewStore()
	k, err := s.NewSink(SinkConfig{Network: "unixgram", Address: path, QueueSize: 2, FlushInterval: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Scope("http.ingress.", "envoy_http_").Histogram("downstream_rq_time")
	for range 5 {
		h.Record(1) // a queue of 2: three are dropped, none blocks
	}
	if v, _ := s.Value("statsd_sink.dropped"); v != 3 {
		t.Errorf("statsd_sink.dropped = %d, want 3", v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // the sink; ends when ctx is cancelled below
		defer close(done)
		k.Run(ctx)
	}()
	cancel()
	<-done
	got := readAll(t, pc, "envoy.http.ingress.downstream_rq_time:1|ms")
	if strings.Count(got, "downstream_rq_time:1|ms") != 2 {
		t.Errorf("want the 2 queued values:\n%s", got)
	}
}

func TestSinkToNowhereNeverBlocks(t *testing.T) {
	// A Unix socket nobody reads: Record must not wait for it.
	path := filepath.Join(t.TempDir(), "gone.sock")
	pc, err := net.ListenPacket("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore()
	k, err := s.NewSink(SinkConfig{Network: "unixgram", Address: path, QueueSize: 16, FlushInterval: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	h := s.Scope("x.", "envoy_x_").Histogram("t")
	for range 1000 {
		h.Record(3)
	}
	k.Flush() // the socket is gone: the write fails and is counted
	if v, _ := s.Value("statsd_sink.write_error"); v == 0 {
		t.Errorf("statsd_sink.write_error = 0 after writing to a closed socket")
	}
	if v, _ := s.Value("statsd_sink.dropped"); v != 1000-16 {
		t.Errorf("statsd_sink.dropped = %d, want %d", v, 1000-16)
	}
}
