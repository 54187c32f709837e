package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestStreamsPerConnection opens 10,000 ADS streams on one HTTP/2
// connection, as a client ignoring SETTINGS_MAX_CONCURRENT_STREAMS would:
// the server advertises its limit and refuses every stream beyond it.
func TestStreamsPerConnection(t *testing.T) {
	ts := startServer(t, openStore(t), fakeTranslate)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	const streams = 10000
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "weft"},
		{":path", "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	// Write from another goroutine: the server's frames must be read
	// meanwhile, or both sides' buffers fill.
	writeErr := make(chan error, 1)
	go func() { // ends after the last HEADERS frame, or at the deadline
		for i := range streams {
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdr.Bytes(), EndHeaders: true}); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	advertised := uint32(0)
	refused := 0
	for refused < streams-DefaultMaxStreamsPerConn {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d refused streams (max_concurrent_streams %d): %v", refused, advertised, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				advertised = v
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				refused++
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %d refused streams", f.ErrCode, refused)
		}
	}
	if advertised != DefaultMaxStreamsPerConn {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want %d", advertised, DefaultMaxStreamsPerConn)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(ts.hub.metrics.streams); n > DefaultMaxStreamsPerConn {
		t.Errorf("%v streams open, want at most %d", n, DefaultMaxStreamsPerConn)
	}
}

// TestStreamsPerIdentity: beyond the limit, another stream with the same
// node id is refused with ResourceExhausted and counted; a closed stream
// frees its slot.
func TestStreamsPerIdentity(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	putNode(t, st, "m", "a")
	ts := startServer(t, st, fakeTranslate, func(o *Options) { o.Limits.MaxStreamsPerIdentity = 2 })
	node := func() *core.Node { return &core.Node{Id: "mesh/m/virtualNode/a"} }
	open := func() *adsClient {
		c := dialADS(t, ts.addr, node())
		c.request(resource.ClusterType, "", "", nil, "")
		return c
	}
	first := open()
	first.next()
	open().next()
	extra := open()
	if err := extra.ended(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a third stream of one identity: %v, want ResourceExhausted", err)
	}
	if n := testutil.ToFloat64(ts.hub.metrics.rejected.WithLabelValues("ResourceExhausted")); n != 1 {
		t.Errorf("streams rejected with ResourceExhausted: %v, want 1", n)
	}
	// Another identity is not affected.
	putNode(t, st, "m", "b")
	other := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/b"})
	other.request(resource.ClusterType, "", "", nil, "")
	other.next()

	first.close()
	waitReplicas(t, ts, "mesh/m/virtualNode/a", 1)
	open().next()
}

// waitReplicas waits until the node id has n streams attached.
func waitReplicas(t *testing.T, ts *testServer, nodeID string, n int) {
	t.Helper()
	deadline := time.After(wait)
	for {
		changed := ts.StatusChanged()
		got := 0
		for _, p := range ts.Proxies() {
			if p.NodeID == nodeID {
				got = p.Replicas
			}
		}
		if got == n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s has %d replicas, want %d", nodeID, got, n)
		}
	}
}

// TestTotalStreams: beyond the server's limit, any new stream is refused
// with ResourceExhausted before it is read.
func TestTotalStreams(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	putNode(t, st, "m", "a")
	ts := startServer(t, st, fakeTranslate, func(o *Options) { o.Limits.MaxStreams = 2 })
	for range 2 {
		c := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/a"})
		c.request(resource.ClusterType, "", "", nil, "")
		c.next()
	}
	extra := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/a"})
	extra.request(resource.ClusterType, "", "", nil, "")
	if err := extra.ended(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a stream over the server's limit: %v, want ResourceExhausted", err)
	}
}

// TestSilentStreamClosed: a stream that sends no request is closed with
// DeadlineExceeded after FirstRequestTimeout, giving its slot back; one
// that names its node in time is served.
func TestSilentStreamClosed(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	putNode(t, st, "m", "a")
	ts := startServer(t, st, fakeTranslate, func(o *Options) {
		o.Limits.MaxStreams = 1
		o.Limits.FirstRequestTimeout = 200 * time.Millisecond
	})
	silent := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/a"})
	if err := silent.ended(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a stream that says nothing: %v, want DeadlineExceeded", err)
	}
	c := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/a"})
	c.request(resource.ClusterType, "", "", nil, "")
	c.next() // the silent stream's slot is free again
}

// countingWriter counts the bytes logged.
type countingWriter struct {
	mu sync.Mutex
	n  int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += len(p)
	return len(p), nil
}

func (w *countingWriter) bytes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// TestLogFlood: a client's huge node id and NACK message are clipped in
// the log (and in errors and /v1/proxies): a 1.9 MB node id, malformed or
// of an unknown mesh, and a 3.5 MB error_detail log a few hundred bytes
// each, where they were logged whole (twice, for the node id).
func TestLogFlood(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	putNode(t, st, "m", "a")
	w := &countingWriter{}
	ts := startServer(t, st, fakeTranslate, func(o *Options) {
		o.Log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	huge := strings.Repeat("x", 1900000)
	for _, tc := range []struct {
		id   string
		code codes.Code
	}{
		{huge, codes.InvalidArgument},
		{"mesh/" + huge + "/virtualNode/a", codes.NotFound},
	} {
		before := w.bytes()
		c := dialADS(t, ts.addr, &core.Node{Id: tc.id})
		c.request(resource.ClusterType, "", "", nil, "")
		err := c.ended()
		if status.Code(err) != tc.code {
			t.Fatalf("a 1.9 MB node id: %v, want %v", status.Code(err), tc.code)
		}
		if msg := status.Convert(err).Message(); len(msg) > 1024 {
			t.Errorf("the error's message has %d bytes", len(msg))
		}
		c.close()
		t.Logf("a 1.9 MB node id (%v) logged %d bytes", tc.code, w.bytes()-before)
		if n := w.bytes() - before; n > 2048 {
			t.Errorf("a 1.9 MB node id (%v) logged %d bytes", tc.code, n)
		}
	}

	c := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/a"})
	c.request(resource.ClusterType, "", "", nil, "")
	r := c.next()
	before := w.bytes()
	c.request(r.GetTypeUrl(), "", r.GetNonce(), nil, strings.Repeat("e", 3500000))
	deadline := time.After(wait)
	for {
		changed := ts.StatusChanged()
		ps := ts.Proxies()
		if len(ps) == 1 && ps[0].LastNack != nil {
			if n := len(ps[0].LastNack.Message); n > nackMessageMax+64 {
				t.Errorf("/v1/proxies keeps a NACK message of %d bytes", n)
			}
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the NACK is not reported")
		}
	}
	t.Logf("a 3.5 MB error_detail logged %d bytes", w.bytes()-before)
	if n := w.bytes() - before; n > 2048 {
		t.Errorf("a 3.5 MB error_detail logged %d bytes", n)
	}
}

// TestMaxRequestSize: a request over the receive limit ends the stream
// with ResourceExhausted.
func TestMaxRequestSize(t *testing.T) {
	ts := startServer(t, openStore(t), fakeTranslate)
	c := dialADS(t, ts.addr, &core.Node{Id: strings.Repeat("x", DefaultMaxRecvMsgSize)})
	c.request(resource.ClusterType, "", "", nil, "")
	err := c.ended()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a request over %d bytes: %v, want ResourceExhausted", DefaultMaxRecvMsgSize, err)
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		t.Errorf("not a gRPC status: %v", err)
	}
}

// TestMaxHeaderSize: a stream whose metadata is over 64 KiB is refused.
func TestMaxHeaderSize(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	putNode(t, st, "m", "a")
	ts := startServer(t, st, fakeTranslate)
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	for _, tc := range []struct {
		size int
		ok   bool
	}{{1 << 10, true}, {100 << 10, false}} {
		mctx := metadata.AppendToOutgoingContext(ctx, "authorization", strings.Repeat("a", tc.size))
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(mctx)
		if err == nil {
			err = stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, Node: &core.Node{Id: "mesh/m/virtualNode/a"}})
		}
		if err == nil {
			_, err = stream.Recv()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%d bytes of metadata: %v, want success %v", tc.size, err, tc.ok)
		}
	}
}

// TestStreamMaxAge: a stream ends with OK once it reaches its jittered
// MaxStreamAge, as App Mesh's management service reset streams; the proxy
// connects again and is authorized again.
func TestStreamMaxAge(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	putNode(t, st, "m", "a")
	const age = 300 * time.Millisecond
	var authorized atomic.Int32
	ts := startServer(t, st, fakeTranslate, func(o *Options) {
		o.Limits.MaxStreamAge = age
		o.Authorize = func(context.Context, translate.Identity) (bool, error) {
			authorized.Add(1)
			return false, nil
		}
	})
	for i := range 2 {
		start := time.Now()
		c := dialADS(t, ts.addr, &core.Node{Id: "mesh/m/virtualNode/a"})
		c.request(resource.ClusterType, "", "", nil, "")
		c.next()
		if err := c.ended(); err != nil && err != io.EOF {
			t.Fatalf("stream %d at its age: %v, want OK", i, err)
		}
		if d := time.Since(start); d < age*9/10 {
			t.Fatalf("stream %d ended after %v, before 90 %% of its age %v", i, d, age)
		}
		if got := authorized.Load(); got != int32(i+1) {
			t.Fatalf("after stream %d: authorized %d times", i, got)
		}
	}
}

// TestStreamAgeJitter: a stream's age is within ±10 % of MaxStreamAge.
func TestStreamAgeJitter(t *testing.T) {
	l := Limits{MaxStreamAge: 30 * time.Minute}
	for _, r := range []float64{0, 0.5, 0.999999} {
		if got := l.streamAge(r); got < 27*time.Minute || got > 33*time.Minute {
			t.Fatalf("streamAge(%v) = %v, outside 27-33 min", r, got)
		}
	}
	if l.streamAge(0) == l.streamAge(0.999999) {
		t.Fatal("no jitter")
	}
	if got := (Limits{}).withDefaults().MaxStreamAge; got != DefaultMaxStreamAge {
		t.Fatalf("default age %v", got)
	}
}
