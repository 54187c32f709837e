package proxy

import (
	"bufio"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestTCPProxyIdleMemory: a tcp_proxy connection waiting for bytes in
// either direction holds no copy buffer (they are taken once bytes have
// arrived), so idle connections cost their state only. Before, each held
// two 32 KiB buffers for its whole life. Go heap in use, measured in this
// process with the echo server's side included, per idle connection.
func TestTCPProxyIdleMemory(t *testing.T) {
	h := newHarness(t)
	echoLn := echoServer(t)
	tp := &tcpv3.TcpProxy{StatPrefix: "idle", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"}, IdleTimeout: durationpb.New(time.Hour)}
	h.push(tcpListener("tcp", tp), edsCluster("echo"), cla("echo", echoLn.Addr().String()))
	addr := h.addr("tcp")
	roundTrip := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReaderSize(c, 16).ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatalf("echo: %q %v", line, err)
		}
		return c
	}
	roundTrip() // warm: pools, the cluster's first connection
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // a pool keeps its buffers through one collection
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	const n = 300
	for range n {
		roundTrip()
	}
	waitUntil(t, 10*time.Second, "every connection counted", func() bool { return h.stat("tcp.idle.downstream_cx_total") == n+1 })
	after := heap()
	per := (int64(after) - int64(before)) / n
	t.Logf("Go heap in use per idle tcp_proxy connection: %d bytes (%d connections)", per, n)
	if per > 16<<10 {
		t.Errorf("an idle tcp_proxy connection holds %d bytes of Go heap, want under 16 KiB (no copy buffers)", per)
	}
}
