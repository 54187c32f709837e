package cluster

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// edsCluster is an EDS cluster named e, with mod applied, started.
func edsCluster(t *testing.T, mod func(*clusterv3.Cluster)) *Cluster {
	t.Helper()
	pb := &clusterv3.Cluster{Name: "e", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
	if mod != nil {
		mod(pb)
	}
	return startedCluster(t, pb)
}

// startedCluster builds pb's cluster and starts it until the test ends.
func startedCluster(t *testing.T, pb *clusterv3.Cluster) *Cluster {
	t.Helper()
	c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.start(ctx, stats.NewStore())
	t.Cleanup(func() { cancel(); c.halt() })
	return c
}

// TestH1IdleForgetsDepartedHosts: as an EDS cluster's endpoints roll over
// (each rollout a new pod address, the old pod gone), the HTTP/1.1
// client's idle pool keeps connections of the hosts in the cluster only.
// It kept every address it had ever sent to, with its idle connections:
// an entry and open sockets per departed pod, for good.
func TestH1IdleForgetsDepartedHosts(t *testing.T) {
	c := edsCluster(t, nil)
	const rollouts = 10
	for i := range rollouts {
		gone := make(chan struct{})
		srv := newRawServer(t, func(cn net.Conn, br *bufio.Reader) {
			go func() { <-gone; cn.Close() }() // ends when the pod goes, or the test ends
			serveRequests(ok, false)(cn, br)
		})
		// Before the server's own clean-up, which waits for its handlers.
		t.Cleanup(func() {
			select {
			case <-gone:
			default:
				close(gone)
			}
		})
		if err := c.setEndpoints(assignmentOf("e", srv.addr())); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 3)
		for range 3 { // 3 at once: 3 connections end idle
			go func() { // ends with its request
				_, _, err := get(t, c, context.Background(), http.MethodGet, srv.addr(), nil)
				done <- err
			}()
		}
		for range 3 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		c.h1.mu.Lock()
		addrs, live := len(c.h1.idle), len(c.h1.idle[srv.addr()])
		c.h1.mu.Unlock()
		if addrs != 1 || live == 0 {
			t.Fatalf("rollout %d: the idle pool holds %d addresses, %d connections to the one in the cluster; want 1, and some", i, addrs, live)
		}
		if i < rollouts-1 {
			close(gone) // this pod goes with the next rollout
		}
	}
}

// TestH1ExchangeOutlivingItsHost: a connection whose host leaves the
// cluster while its exchange runs is closed when the exchange ends, not
// pooled under an address nothing will look up again.
func TestH1ExchangeOutlivingItsHost(t *testing.T) {
	c := edsCluster(t, nil)
	answer := make(chan struct{})
	old := newRawServer(t, func(cn net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		<-answer
		_, _ = io.WriteString(cn, ok)
		_, _ = br.ReadByte() // until the proxy's side closes
	})
	next := newRawServer(t, serveRequests(ok, false))
	t.Cleanup(c.h1.closeIdle) // before the servers' clean-ups, which wait for their connections
	if err := c.setEndpoints(assignmentOf("e", old.addr())); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { // ends with its request
		_, _, err := get(t, c, context.Background(), http.MethodGet, old.addr(), nil)
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); old.conns.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request did not reach the old host in 5 s")
		}
	}
	if err := c.setEndpoints(assignmentOf("e", next.addr())); err != nil {
		t.Fatal(err)
	}
	close(answer)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.h1.mu.Lock()
	n := len(c.h1.idle[old.addr()])
	c.h1.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections pooled to the host that left", n)
	}
}

// TestHealthChecksForgetDepartedHosts: a gRPC-health-checked cluster
// keeps a gRPC connection per host in it, not per host it ever checked.
// Each departed host's connection kept its goroutines and redialled the
// old address for good.
func TestHealthChecksForgetDepartedHosts(t *testing.T) {
	c := edsCluster(t, func(pb *clusterv3.Cluster) {
		pb.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(200 * time.Millisecond), Interval: durationpb.New(20 * time.Millisecond),
			UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(2),
			HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}}}}
	})
	// Addresses nobody listens on: refused at once, as a gone pod's.
	var addrs []string
	for range 30 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	if err := c.setEndpoints(assignmentOf("e", addrs[0])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()
	for _, a := range addrs[1:] {
		if err := c.setEndpoints(assignmentOf("e", a)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // two rounds of checks
	}
	// Each connection has about 4 goroutines; 29 departed hosts kept
	// over a hundred.
	var n int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n = runtime.NumGoroutine(); n <= base+20 {
			return
		}
	}
	t.Fatalf("%d goroutines after %d endpoint changes, %d before: the departed hosts' connections were kept", n, len(addrs)-1, base)
}

// TestH1IdleForgetsCleanedOriginalDst: an ORIGINAL_DST cluster's idle
// connections to a destination go with its host, when the cleanup
// interval drops it; they stayed, keyed by every destination ever seen.
func TestH1IdleForgetsCleanedOriginalDst(t *testing.T) {
	pb := &clusterv3.Cluster{Name: "passthrough", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED, CleanupInterval: durationpb.New(50 * time.Millisecond)}
	c := startedCluster(t, pb)
	srv := newRawServer(t, serveRequests(ok, false))
	t.Cleanup(c.h1.closeIdle) // before the server's clean-up, which waits for its connections
	// As the proxy sends it: the host in the context, so that its
	// connections count in its cxActive, the pooled one too.
	h := c.OriginalDstHost(srv.addr())
	if _, _, err := get(t, c, WithHost(context.Background(), h), http.MethodGet, srv.addr(), nil); err != nil {
		t.Fatal(err)
	}
	if n := h.cxActive.Load(); n != 1 {
		t.Fatalf("the host counts %d connections, want its pooled one", n)
	}
	c.h1.mu.Lock()
	n := len(c.h1.idle[srv.addr()])
	c.h1.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d idle connections to the destination after a request, want 1", n)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, host := c.origDst.Load(srv.addr())
		c.h1.mu.Lock()
		n = len(c.h1.idle)
		c.h1.mu.Unlock()
		if !host && n == 0 {
			return
		}
	}
	t.Fatalf("the idle pool still holds %d addresses after the destination's host was cleaned up", n)
}

// TestH2IdleForgetsCleanedOriginalDst: as TestH1IdleForgetsCleanedOriginalDst,
// over HTTP/2. x/net's Transport closes the idle connections of every
// address or of none, so a cleaned-up destination's idle connection, and
// with it the host (the connection counts in its cxActive), stayed until
// the idle timeout: an hour by default.
func TestH2IdleForgetsCleanedOriginalDst(t *testing.T) {
	addr, open := h2Upstream(t, okHandler)
	pb := &clusterv3.Cluster{Name: "passthrough", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED, CleanupInterval: durationpb.New(50 * time.Millisecond),
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	c := startedCluster(t, pb)
	rt, http1 := c.Transport(2)
	if http1 {
		t.Fatal("an http2 cluster gave its HTTP/1.1 transport")
	}
	h := c.OriginalDstHost(addr)
	req, _ := http.NewRequestWithContext(WithHost(t.Context(), h), http.MethodGet, "http://"+addr+"/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "ok" {
		t.Fatalf("got %s %q, want HTTP/2 ok", resp.Proto, b)
	}
	if n := h.cxActive.Load(); n != 1 {
		t.Fatalf("the host counts %d connections, want its idle one", n)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, host := c.origDst.Load(addr)
		if !host && h.cxActive.Load() == 0 && open.Load() == 0 {
			return
		}
	}
	_, host := c.origDst.Load(addr)
	t.Fatalf("after the cleanup interval: host kept %v, its connections %d, open at the destination %d; want none",
		host, h.cxActive.Load(), open.Load())
}

// TestHTTPHealthChecksForgetDepartedHosts: an HTTP-health-checked
// cluster's idle check connections go with their hosts, and only theirs.
// The checker's one Transport had no idle timeout, so each departed
// host's connection stayed open for good; and it can close every idle
// connection or none, so a departure made every other host's check dial
// again.
func TestHTTPHealthChecksForgetDepartedHosts(t *testing.T) {
	c := edsCluster(t, func(pb *clusterv3.Cluster) {
		pb.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(20 * time.Millisecond),
			UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(2),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/health"}}}}
	})
	// serve starts a server that counts its open connections in open and
	// the connections it ever accepted in dialled.
	serve := func(open, dialled *atomic.Int32) string {
		srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
			ConnState: func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					open.Add(1)
					dialled.Add(1)
				case http.StateClosed, http.StateHijacked:
					open.Add(-1)
				}
			}}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }() // ends with srv.Close
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	var keptOpen, keptDialled, goneOpen, goneDialled atomic.Int32
	kept := serve(&keptOpen, &keptDialled)
	var gone []string
	for range 4 {
		gone = append(gone, serve(&goneOpen, &goneDialled))
	}
	for _, a := range gone {
		if err := c.setEndpoints(assignmentOf("e", kept, a)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond) // a few rounds of checks
	}
	if err := c.setEndpoints(assignmentOf("e", kept)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && goneOpen.Load() > 0; time.Sleep(20 * time.Millisecond) {
	}
	if n := goneOpen.Load(); n > 0 || goneDialled.Load() == 0 {
		t.Fatalf("%d check connections of %d departed hosts still open (%d dialled)", n, len(gone), goneDialled.Load())
	}
	if n := keptDialled.Load(); n != 1 || keptOpen.Load() != 1 {
		t.Fatalf("the host in the cluster throughout was dialled %d times (%d open) as %d others departed, want once",
			n, keptOpen.Load(), len(gone))
	}
}

// TestOriginalDstNeverHandsOutRemoved: OriginalDstHost does not return a
// host the cleanup is removing or removed, which nothing would clean up
// again once out of the map (its connections stayed until their idle
// timeout); and a host used while the cleanup decides is kept.
func TestOriginalDstNeverHandsOutRemoved(t *testing.T) {
	pb := &clusterv3.Cluster{Name: "passthrough", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED, CleanupInterval: durationpb.New(time.Hour)}
	c := startedCluster(t, pb)
	const addr = "10.0.0.1:80"
	// A request loaded h just before the cleanup removed it.
	h := c.OriginalDstHost(addr)
	h.lastUsed.Store(0)
	c.cleanOrigDst(time.Now().UnixNano())
	if _, ok := c.origDst.Load(addr); ok {
		t.Fatal("an unused host was kept")
	}
	if !h.removing.Load() {
		t.Fatal("a removed host is not marked: a request that loaded it before would use it")
	}
	if got := c.OriginalDstHost(addr); got == h {
		t.Fatal("the removed host was handed out again")
	}
	// The cleanup's mark, then a use: the request waits for the decision
	// and gets the host the map holds.
	k := c.OriginalDstHost(addr)
	k.removing.Store(true)
	done := make(chan *Host)
	go func() { done <- c.OriginalDstHost(addr) }() // ends with the decision below
	time.Sleep(20 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("a host marked removing was handed out before the cleanup decided")
	default:
	}
	k.removing.Store(false) // kept: it was used
	if got := <-done; got != k {
		t.Fatal("a host the cleanup kept was not handed out")
	}
	// Used since its last check: cleanOrigDst keeps it.
	c.cleanOrigDst(time.Now().UnixNano())
	if v, ok := c.origDst.Load(addr); !ok || v.(*Host) != k || k.removing.Load() {
		t.Fatal("a host in use was removed, or left marked")
	}
}
