package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/netns/netnstest"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// startAPI serves the API handler on ln as Run does, with lim, until the
// test ends. It returns the metrics registry.
func startAPI(t *testing.T, ln net.Listener, lim APILimits) *prometheus.Registry {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := Config{Region: "us-east-1", AccountID: "111122223333"}
	sec, err := newSecurity(t.Context(), st, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.stop)
	srv := newAPIServer(newHandler(st, cfg, slog.New(slog.DiscardHandler), reg, nil, sec, nil, nil), lim)
	done := make(chan struct{})
	go func() { // ends with srv.Close in the cleanup
		defer close(done)
		srv.Serve(newCapListener(ln, lim, newAPIMetrics(reg)))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		st.Close()
	})
	return reg
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// waitClosed reads c until the server closes it, which must happen before
// patience runs out; it returns what was read.
func waitClosed(t *testing.T, c net.Conn, patience time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open after %v (read %q)", patience, b)
	}
	return string(b)
}

// TestAPISlowBody: a client that sends the headers and one byte of a 1 MB
// body is answered 408 and cut off after the read timeout, on both APIs. Before the read
// timeout, such connections stayed open for ever.
func TestAPISlowBody(t *testing.T) {
	ln := listenLoopback(t)
	startAPI(t, ln, APILimits{ReadTimeout: 300 * time.Millisecond})
	for name, head := range map[string]string{
		"appmesh":  "PUT /v20190125/meshes HTTP/1.1\r\nHost: weft\r\nContent-Type: application/json\r\n",
		"cloudmap": "POST / HTTP/1.1\r\nHost: weft\r\nX-Amz-Target: Route53AutoNaming_v20170314.ListNamespaces\r\nContent-Type: application/x-amz-json-1.1\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, head+"Content-Length: 1048576\r\n\r\n{"); err != nil {
				t.Fatal(err)
			}
			got := waitClosed(t, c, 5*time.Second)
			if !strings.HasPrefix(got, "HTTP/1.1 408 ") || !strings.Contains(got, "RequestTimeoutException") || strings.Contains(got, "127.0.0.1") {
				t.Errorf("a slow body was answered %q, want a 408 RequestTimeoutException", got)
			}
		})
	}
}

// TestAPIHeaderTimeout: a connection that stops halfway through its
// headers is closed after the read-header timeout.
func TestAPIHeaderTimeout(t *testing.T) {
	ln := listenLoopback(t)
	startAPI(t, ln, APILimits{ReadHeaderTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: weft\r\n")
	waitClosed(t, c, 5*time.Second)
}

// TestAPIIdleTimeout: a keep-alive connection that sends no second
// request is closed after the idle timeout.
func TestAPIIdleTimeout(t *testing.T) {
	ln := listenLoopback(t)
	startAPI(t, ln, APILimits{IdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: weft\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("healthz: %d, close %v", resp.StatusCode, resp.Close)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(br); err != nil {
		t.Fatalf("idle connection not closed: %v (read %q)", err, b)
	}
}

// labFamily names what this package's network-namespace tests create.
const labFamily = "wfal"

// labHost is a host of a network-namespace lab of the test's own, on
// subnet at addr, removed when the test ends.
func labHost(t *testing.T, subnet, addr string) *netns.Host {
	t.Helper()
	netnstest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if removed, err := netns.Sweep(ctx, labFamily); err != nil || len(removed) > 0 {
		t.Logf("swept leftovers of an earlier run: %v (err %v)", removed, err)
	}
	lab, err := netns.New(ctx, labFamily, netip.MustParsePrefix(subnet), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	host, err := lab.AddHost(ctx, "srv", netip.MustParseAddr(addr), netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return host
}

// dialFrom opens a connection from inside host's namespace, closed when
// the test ends; to the host's own address, its source is that address,
// not loopback.
func dialFrom(t *testing.T, host *netns.Host, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := host.Do(func() (err error) {
		c, err = net.Dial("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAPIConnectionCap fills the connection cap with slow clients from a
// non-loopback address, in a network namespace of its own: the next such
// client is answered 503 at once and counted, while /healthz from loopback
// still answers, up to the loopback reserve.
func TestAPIConnectionCap(t *testing.T) {
	host := labHost(t, "10.251.210.0/24", "10.251.210.10")
	var ln net.Listener
	if err := host.Do(func() (err error) {
		ln, err = net.Listen("tcp", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	const maxConns, reserve = 10, 2
	reg := startAPI(t, ln, APILimits{MaxConns: maxConns, LoopbackReserve: reserve})
	remote := netip.AddrPortFrom(host.Addr, uint16(port)).String()
	loopback := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String()

	dial := func(addr string) net.Conn { return dialFrom(t, host, addr) }
	// get sends GET /healthz on c and returns the status.
	get := func(c net.Conn) (int, *bufio.Reader) {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: weft\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET /healthz: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, br
	}
	// slow is a client that was served once (so it holds a slot) and then
	// sends half of its next request's headers.
	slow := func(addr string) {
		t.Helper()
		c := dial(addr)
		if code, _ := get(c); code != 200 {
			t.Fatalf("slow client %s: first request answered %d", addr, code)
		}
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: we")
	}
	for range maxConns {
		slow(remote)
	}
	if code, _ := get(dial(remote)); code != http.StatusServiceUnavailable {
		t.Fatalf("a remote client over the cap: %d, want 503", code)
	}
	// A local health probe still gets through, while remote clients
	// fill the cap.
	probe := dial(loopback)
	if code, _ := get(probe); code != 200 {
		t.Fatalf("/healthz from loopback at the cap: %d, want 200", code)
	}
	slow(loopback) // the reserve's second slot
	if code, _ := get(dial(loopback)); code != http.StatusServiceUnavailable {
		t.Fatalf("a loopback client over cap and reserve: %d, want 503", code)
	}
	if n := value(t, reg, "weft_api_connections_rejected_total"); n != 2 {
		t.Errorf("weft_api_connections_rejected_total = %v, want 2", n)
	}
	if n := value(t, reg, "weft_api_connections"); n != maxConns+reserve {
		t.Errorf("weft_api_connections = %v, want %d", n, maxConns+reserve)
	}
}

// value is the value of an unlabelled counter or gauge of reg.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

// TestXDSConnectionCap: the xDS listener, on an address other peers can
// reach, holds at most --xds-max-conns connections from them; the next is
// closed at once, while a loopback peer is still served an ADS stream.
func TestXDSConnectionCap(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	host := labHost(t, "10.251.211.0/24", "10.251.211.10")
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const maxConns = 3
	reg := prometheus.NewRegistry()
	var x *xdsRun
	if err := host.Do(func() (err error) {
		// Port 15000 inside the test's own namespace: nothing else listens there.
		x, err = startXDS(ctx, st, Config{XDSAddr: "0.0.0.0:15000", XDSMaxConns: maxConns, XDSHandshakeTimeout: 2 * time.Second, XDSInsecure: true, AccountID: "111122223333"}, nil, reg, log)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.stop) // after the connections below are closed

	dial := func(addr string) net.Conn { return dialFrom(t, host, addr) }
	var silent []net.Conn
	for range maxConns {
		silent = append(silent, dial("10.251.211.10:15000")) // held: they send nothing
	}
	if got := waitClosed(t, dial("10.251.211.10:15000"), 10*time.Second); got != "" {
		t.Errorf("a refused connection read %q, want nothing", got)
	}
	// A loopback peer gets a real ADS exchange at the cap: the stream is
	// read and answered (here refused for its node id).
	var conn *grpc.ClientConn
	if err := host.Do(func() (err error) {
		conn, err = grpc.NewClient("127.0.0.1:15000", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := host.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := askBadNodeID(ctx, conn); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a loopback stream at the cap ended with %v, want InvalidArgument", err)
	}
	if n := value(t, reg, "weft_xds_connections_rejected_total"); n != 1 {
		t.Errorf("weft_xds_connections_rejected_total = %v, want 1", n)
	}
	if n := value(t, reg, "weft_xds_connections"); n != maxConns+1 {
		t.Errorf("weft_xds_connections = %v, want %d", n, maxConns+1)
	}
	// A peer that never completes its handshake loses its slot after
	// the handshake timeout: the cap is not held forever by silence.
	for _, c := range silent {
		waitClosed(t, c, 30*time.Second) // after the server's SETTINGS frame
	}
	// A new peer is served again: it reads the server's HTTP/2 SETTINGS
	// frame (a refused one reads nothing, as above).
	held := dial("10.251.211.10:15000")
	held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := held.Read(make([]byte, 9)); n == 0 {
		t.Errorf("a connection after the silent ones were closed: %v, want the server's SETTINGS", err)
	}
}

// TestAPIWriteTimeout: a response to a client that does not read it is
// cut off after the write timeout. Without one, a client pipelining large
// lists and reading nothing held its connection (a slot of
// --api-max-conns) and a goroutine for good.
func TestAPIWriteTimeout(t *testing.T) {
	ln := listenLoopback(t)
	done := make(chan error, 1)
	srv := newAPIServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for range 1024 { // 64 MiB, far more than the sockets' buffers
			if _, err := w.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}), APILimits{WriteTimeout: 300 * time.Millisecond})
	go func() { _ = srv.Serve(ln) }() // ends with srv.Close
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: weft\r\n\r\n")
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("64 MiB written to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the response to a client that reads nothing is still being written after 10 s")
	}
}
