package cluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestH2StreamLimit: requests beyond the streams an HTTP/2 upstream
// allows per connection wait for a stream or go on another connection of
// the cluster's HTTP/2 transport, over HTTP/2, and none fails. The
// upstream allows one stream per connection and holds each request until
// three are in flight or a short wait passed. A stream sent before its
// connection's SETTINGS told the limit is refused (REFUSED_STREAM), as
// Envoy's codec sends it too, and sent again here as the route's retry
// policy would (retry_on refused-stream): the transport does not.
func TestH2StreamLimit(t *testing.T) {
	var conns, inflight atomic.Int32
	all := make(chan struct{})
	var closeAll sync.Once
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if inflight.Add(1) == 3 {
			closeAll.Do(func() { close(all) })
		}
		defer inflight.Add(-1)
		select {
		case <-all:
		case <-time.After(200 * time.Millisecond): // the others wait for this stream
		}
		_, _ = io.WriteString(w, "ok")
	}), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}, Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1}}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }() // ends with srv.Close below
	defer srv.Close()
	c := h2Cluster(t, ln.Addr().String(), 1024, 1024)
	rt, http1 := c.Transport(1)
	if http1 {
		t.Fatal("an http2 cluster gave its HTTP/1.1 transport")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() { // one request; ends with its response
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var resp *http.Response
			var err error
			for range 3 {
				req, _ := http.NewRequestWithContext(WithHost(ctx, c.Hosts()[0]), "GET", "http://"+ln.Addr().String()+"/", nil)
				if resp, err = rt.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "REFUSED_STREAM") {
					break
				}
			}
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.ProtoMajor != 2 || string(b) != "ok" {
				errs <- &protoErr{resp.Proto + " " + strconv.Quote(string(b))}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := conns.Load(); n < 1 || n > 3 {
		t.Errorf("%d connections for 3 requests", n)
	}
	if got := c.cxActive.Load(); got != int64(conns.Load()) {
		t.Errorf("cx_active %d, the upstream saw %d connections", got, conns.Load())
	}
}

type protoErr struct{ s string }

func (e *protoErr) Error() string { return "response " + e.s }

// h2Cluster is a static cluster speaking h2c to addr with these circuit
// breakers.
func h2Cluster(t *testing.T, addr string, maxConns, maxReqs uint32) *Cluster {
	t.Helper()
	pb := &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(maxConns), MaxRequests: wrapperspb.UInt32(maxReqs)}}},
		LoadAssignment: assignmentOf("c", addr)}
	c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.halt)
	return c
}

// TestH2RemovedHostDrained: the hosts an update removes are drained, as
// Envoy drains their pools: a stream in flight on a removed host's HTTP/2
// connection finishes, takes the connection with it, and no request goes
// on it meanwhile; an idle one closes at once.
func TestH2RemovedHostDrained(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	addr, open := h2Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	for _, inFlight := range []bool{false, true} {
		c := h2Cluster(t, addr, 1024, 1024)
		rt, _ := c.Transport(2)
		h := c.Hosts()[0]
		get := func(path string) error {
			req, _ := http.NewRequestWithContext(WithHost(context.Background(), h), "GET", "http://"+addr+path, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if string(b) != "ok" {
				return &protoErr{strconv.Quote(string(b))}
			}
			return nil
		}
		if err := get("/"); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		if inFlight {
			go func() { done <- get("/slow") }() // ends when release is closed
			<-started
		}
		c.setHosts(nil)
		if inFlight {
			if got := c.cxActive.Load(); got != 1 {
				t.Fatalf("in flight: cx_active %d after the removal, want 1", got)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatalf("the stream in flight at the removal: %v", err)
			}
		}
		wait("the removed host's connection closed", func() bool { return c.cxActive.Load() == 0 && open.Load() == 0 })
	}
}
