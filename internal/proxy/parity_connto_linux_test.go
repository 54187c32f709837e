package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestConnectTimeoutSamePaths: a cluster's connect_timeout bounds the
// connect to a host that never answers the SYN, and over TLS the connect
// and its handshake together (to a host that accepts and never answers
// the ClientHello), as Envoy's connect timer runs until its TLS socket
// says the connection is up, on every path, HTTP/1.1 and h2c clients,
// HTTP/1.1 and HTTP/2 clusters: of two requests started together, the
// one to a cluster of 250 ms (App Mesh's for the local app) is answered
// before the one to a cluster of 3 s, which is not given up on before
// its 3 s, each 503 UF with the reset reason connection timeout (body
// and details connection_timeout, as Envoy's pool reports a connect its
// timer ended since 1.27, App Mesh's last Envoy images among them; every
// path said connection failure, as for any failed connect) and counted
// in upstream_cx_connect_timeout and
// upstream_cx_connect_fail, as Envoy's pool counts a connect its timer
// ended (ActiveClient::onConnectTimeout), and in the host's
// cx_connect_fail. The loops bounded every
// connect by one fixed 1 s, whatever the cluster's, and counted no
// connect timeout; the goroutine path counted a plaintext one only when
// the dialer reported the context's deadline rather than the socket's.
// With --h2loops the loops serve every leg (nothing handed off), an
// HTTP/1.1 client's request to an HTTP/2 cluster over TLS included,
// which they handed to the goroutine path.
func TestConnectTimeoutSamePaths(t *testing.T) {
	hole, silent := synDropAddr(t), silentAddr(t)
	ca := tlstest.NewCA(t, "mesh")
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/proxy"))
	const body = "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
	type leg struct {
		h2Client, h2Up, tls bool
	}
	var legs []leg
	for _, tls := range []bool{false, true} {
		legs = append(legs, leg{false, false, tls}, leg{false, true, tls}, leg{true, false, tls}, leg{true, true, tls})
	}
	name := func(l leg, short bool) string {
		n := map[bool]string{false: "h1", true: "h2"}
		d := map[bool]string{false: "long", true: "short"}
		s := map[bool]string{false: "", true: "tls-"}
		return s[l.tls] + "c" + n[l.h2Client] + "-u" + n[l.h2Up] + "-" + d[short]
	}
	var rs []types.Resource
	var routes []*routev3.Route
	for _, l := range legs {
		for _, short := range []bool{true, false} {
			c := name(l, short)
			timeout := 3 * time.Second
			if short {
				timeout = 250 * time.Millisecond
			}
			mods := []func(*clusterv3.Cluster){func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(timeout) }}
			if l.h2Up {
				mods = append(mods, h2Upstream)
			}
			addr := hole
			if l.tls {
				mods, addr = append(mods, upstreamTLS(client, "app.local", "spiffe://weft.local/app")), silent
			}
			rs = append(rs, edsCluster(c, mods...), cla(c, addr))
			routes = append(routes, routeTo("/"+c, c))
		}
	}
	names := []string{"upstream_cx_total", "upstream_cx_connect_fail", "upstream_cx_connect_timeout", "upstream_rq_503"}
	var mu sync.Mutex
	results := map[string]pathResult{}
	t.Run("paths", func(t *testing.T) {
		for _, p := range proxyPaths() {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel() // each waits 3 s for its long connects
				h, logFile := loggedEgress(t, p, cutLogFormat(), append([]types.Resource{
					routeConfig("rds", vhost("v", []string{"*"}, routes...))}, rs...)...)
				clients := map[bool]*http.Client{false: {Transport: &http.Transport{DisableKeepAlives: true}}, true: h2cClient(t)}
				// Every request starts together; done gets each cluster's
				// name as its answer comes.
				done := make(chan string, 2*len(legs))
				answers := map[string]string{}
				took := map[string]time.Duration{}
				start := time.Now()
				var amu sync.Mutex
				var wg sync.WaitGroup
				for _, l := range legs {
					for _, short := range []bool{true, false} {
						c := name(l, short)
						wg.Add(1)
						go func() { // one request; ends with its answer, within the route timeout (15 s)
							defer wg.Done()
							got := "no answer"
							resp, err := clients[l.h2Client].Get("http://" + h.addr("egress") + "/" + c)
							if err == nil {
								b, _ := io.ReadAll(resp.Body)
								_ = resp.Body.Close()
								got = resp.Status[:3] + " " + string(b)
							} else {
								got = err.Error()
							}
							done <- c
							amu.Lock()
							answers[c], took[c] = got, time.Since(start)
							amu.Unlock()
						}()
					}
				}
				wg.Wait()
				close(done)
				var order []string
				for c := range done {
					order = append(order, c)
				}
				for _, l := range legs {
					short, long := name(l, true), name(l, false)
					if want := "503 " + body; answers[short] != want || answers[long] != want {
						t.Errorf("%s: answered %q, %s %q; want %q", short, answers[short], long, answers[long], want)
					}
					if i, j := slices.Index(order, short), slices.Index(order, long); i > j {
						t.Errorf("%s answered after %s (answers in order: %v)", short, long, order)
					}
					// A timeout never fires early: the 3 s connect is not
					// given up on before (100 ms for the loop's clock,
					// read at its iteration's start).
					if took[long] < 3*time.Second-100*time.Millisecond {
						t.Errorf("%s answered after %v, before its connect timeout (3 s)", long, took[long])
					}
				}
				want := map[string]int64{}
				var stats []string
				for _, l := range legs {
					for _, short := range []bool{true, false} {
						c := name(l, short)
						want["cluster."+c+".upstream_cx_connect_timeout"] = 1
						want["cluster."+c+".upstream_cx_connect_fail"] = 1
						stats = append(stats, c+":\n"+h.counts("cluster."+c+".", names))
					}
				}
				waitStats(t, h, want)
				// The host's cx_connect_fail (/clusters) counts the timed
				// out connect too, as Envoy's pool charges the host with
				// the cluster for a client closed while connecting
				// (ConnPoolImplBase::onConnectionEvent; the loops
				// counted the cluster's alone).
				for _, l := range legs {
					addr := hole
					if l.tls {
						addr = silent
					}
					for _, short := range []bool{true, false} {
						if n := hostStat(h, name(l, short), addr, "cx_connect_fail"); n != 1 {
							t.Errorf("%s: the host's cx_connect_fail = %d, want 1", name(l, short), n)
						}
					}
				}
				// One line per request: its protocol, path and the
				// failed connect's flags.
				log := awaitLog(t, logFile, 2*len(legs))
				for _, l := range legs {
					for _, short := range []bool{true, false} {
						line := clientProto(l.h2Client) + " /" + name(l, short) + " 503 UF upstream_reset_before_response_started{connection_timeout}"
						if !slices.Contains(strings.Split(log, "\n"), line) {
							t.Errorf("access log lacks %q:\n%s", line, log)
						}
					}
				}
				if l := h.listener("egress"); !p.goroutines && !p.h2Goroutines && l.HandedOff() != 0 {
					t.Errorf("%d connections handed off, want none on the loops", l.HandedOff())
				}
				mu.Lock()
				results[p.name] = pathResult{answers: answers, stats: strings.Join(stats, "\n"), log: log}
				mu.Unlock()
			})
		}
	})
	var all []string
	for _, l := range legs {
		all = append(all, name(l, true), name(l, false))
	}
	sameAsGoroutinePath(t, results, all)
}

// synDropAddr is a loopback address whose SYNs go unanswered while the
// test runs: a listener with a backlog of 0 whose one queued connection
// is never accepted, so that the kernel drops every further SYN (its
// accept queue full, tcp_conn_request) and a connect hangs until its
// timeout, as to a host that is down behind a firewall.
func synDropAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = filler.Close() })
	// The queue is full once the filler's handshake is done: a probe's
	// connect must time out, not complete.
	var ne net.Error
	probe, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		_ = probe.Close()
		t.Fatalf("a connect to %s completed: its SYNs are not dropped", addr)
	}
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("probe of %s: %v, want a timeout", addr, err)
	}
	return addr
}

// silentAddr is a loopback address that accepts connections and never
// sends a byte on them while the test runs: a TLS handshake with it
// waits for the server's hello until its timeout.
func silentAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() { // accepts until the listener closes in Cleanup
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// TestConnectTimeoutKeptPerConnect: a connect keeps the connect_timeout
// its cluster had when it started, as Envoy arms its connect timer once
// with the connection (ActiveClient): a CDS update raising the cluster's
// connect_timeout from 1 s to 3 s while a connect is in flight, and a
// request that reaches the host's pool with the new value, do not move
// the first connect's timeout, on every path. The loops read the pool's
// value, the last request's, whenever they armed or checked the timer.
func TestConnectTimeoutKeptPerConnect(t *testing.T) {
	hole := synDropAddr(t)
	withTimeout := func(d time.Duration) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(d) }
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel() // each waits 3 s for the second connect
			h := newHarness(t, p.logged)
			config := func(d time.Duration) []types.Resource {
				return []types.Resource{httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
					edsCluster("c", withTimeout(d)), cla("c", hole)}
			}
			h.push(config(time.Second)...)
			// Both requests on one h2c connection, so on one loop, whose
			// pool of the host they share.
			client := h2cClient(t)
			get := func(took chan<- time.Duration) {
				start := time.Now()
				resp, err := client.Get("http://" + h.addr("egress") + "/")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
				took <- time.Since(start)
			}
			first, second := make(chan time.Duration, 1), make(chan time.Duration, 1)
			go get(first) // ends with its answer, within the route timeout (15 s)
			time.Sleep(100 * time.Millisecond)
			h.push(config(3 * time.Second)...)
			go get(second) // likewise
			if d := <-first; d >= 2*time.Second {
				t.Errorf("the connect started with a 1 s connect_timeout answered after %v", d)
			}
			<-second
		})
	}
}
