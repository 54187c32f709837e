package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestUpstreamConnectionGaugesSamePaths: every path counts its upstream
// connections in the cluster's upstream_cx_active and upstream_cx_total
// and the host's cx_active and cx_total (admin /clusters): while they are
// open the gauges equal the connections the upstream holds open, cx_total
// the ones it accepted, and once the upstream closes them both gauges
// return to 0 (on the loops, and the goroutine path's HTTP/2 pool). The
// loops counted none of the gauges (upstream_cx_active
// read 0 on the default path) nor the host's cx_total.
func TestUpstreamConnectionGaugesSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	dir := t.TempDir()
	client := writeLeaf(t, dir, ca, ca.Issue(t, nil, "spiffe://weft.local/front"))
	leaf := ca.Issue(t, []string{"back.local"})
	for _, tc := range upstreamKinds {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					tlsCfg, mods := tc.setup(t, leaf, client)
					up := newClosingUpstream(t, tc.h2, tlsCfg)
					h := newHarness(t, p.on)
					h.push(httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c", mods...), cla("c", up.addr))
					url := "http://" + h.addr("egress") + "/x"
					// Several client connections at once, then more
					// requests on them: some upstream connections, reused.
					var wg sync.WaitGroup
					errs := make(chan error, 4)
					for range 4 {
						wg.Add(1)
						go func() { // ends after its requests
							defer wg.Done()
							c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
							defer c.Transport.(*http.Transport).CloseIdleConnections()
							for range 3 {
								resp, err := c.Get(url)
								if err != nil {
									errs <- err
									return
								}
								_, _ = io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
								if resp.StatusCode != 200 {
									errs <- fmt.Errorf("status %d", resp.StatusCode)
									return
								}
							}
						}()
					}
					wg.Wait()
					close(errs)
					for err := range errs {
						t.Fatal(err)
					}
					hostStat := func(name string) int64 {
						var v int64
						prefix := "c::" + up.addr + "::" + name + "::"
						for _, line := range strings.Split(h.admin("/clusters"), "\n") {
							if s, ok := strings.CutPrefix(line, prefix); ok {
								_, _ = fmt.Sscan(s, &v)
							}
						}
						return v
					}
					counts := func() string {
						return fmt.Sprintf("upstream_cx_active %d upstream_cx_total %d host cx_active %d cx_total %d",
							h.stat("cluster.c.upstream_cx_active"), h.stat("cluster.c.upstream_cx_total"),
							hostStat("cx_active"), hostStat("cx_total"))
					}
					var want string
					deadline := time.Now().Add(5 * time.Second)
					for {
						open, accepted := up.counts()
						want = fmt.Sprintf("upstream_cx_active %d upstream_cx_total %d host cx_active %d cx_total %d",
							open, accepted, open, accepted)
						if open > 0 && counts() == want {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("with the upstream's connections open: %s; want %s", counts(), want)
						}
						time.Sleep(2 * time.Millisecond)
					}
					if p.goroutines && !tc.h2 {
						// The goroutine path's HTTP/1.1 pool learns of an
						// idle connection's close by the upstream only at
						// its next use (cluster's h1Client.get), so its
						// gauges keep it until then: the close is the
						// loops' to check (docs/proxy.md, Known differences).
						return
					}
					_, accepted := up.counts()
					up.closeAll()
					want = fmt.Sprintf("upstream_cx_active 0 upstream_cx_total %d host cx_active 0 cx_total %d", accepted, accepted)
					waitUntil(t, 5*time.Second, "the gauges back to 0", func() bool { return counts() == want })
					if got := counts(); got != want {
						t.Fatalf("once the upstream closed its connections: %s; want %s", got, want)
					}
				})
			}
		})
	}
}

// upstreamKind is an upstream the connection tests run against: HTTP/1.1
// or HTTP/2 (h2), plaintext or over TLS (tl).
type upstreamKind struct {
	name   string
	h2, tl bool
}

// upstreamKinds: HTTP/1.1, HTTP/2 (h2c) and HTTP/1.1 over TLS.
var upstreamKinds = []upstreamKind{
	{"HTTP/1.1 upstream", false, false},
	{"HTTP/2 upstream", true, false},
	{"HTTP/1.1 upstream over TLS", false, true},
}

// setup returns the upstream server's TLS configuration (leaf's, nil in
// plaintext) and the cluster's modifications that reach it (HTTP/2; TLS
// with client's certificate, SNI and SAN back.local).
func (k upstreamKind) setup(t *testing.T, leaf tlstest.Leaf, client tlsFiles) (*tls.Config, []func(*clusterv3.Cluster)) {
	var tlsCfg *tls.Config
	var mods []func(*clusterv3.Cluster)
	if k.h2 {
		mods = append(mods, h2Upstream)
	}
	if k.tl {
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{leaf.TLS(t)}, NextProtos: []string{"http/1.1"}}
		mods = append(mods, upstreamTLS(client, "back.local", "back.local"))
	}
	return tlsCfg, mods
}

// closingUpstream is an HTTP upstream (HTTP/1.1, h2c with h2, over TLS
// with tlsCfg) that keeps its connections, to count and close them.
type closingUpstream struct {
	addr     string
	mu       sync.Mutex
	conns    map[net.Conn]bool
	accepted int
}

func newClosingUpstream(t *testing.T, h2 bool, tlsCfg *tls.Config) *closingUpstream {
	return newClosingUpstreamWith(t, h2, tlsCfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
}

// newClosingUpstreamWith is newClosingUpstream answering with hd.
func newClosingUpstreamWith(t *testing.T, h2 bool, tlsCfg *tls.Config, hd http.Handler) *closingUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &closingUpstream{addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	if h2 {
		hd = h2c.NewHandler(hd, &http2.Server{})
	}
	srv := &http.Server{Handler: hd}
	var l net.Listener = trackingListener{ln, u}
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg)
	}
	go func() { _ = srv.Serve(l) }() // ends with srv.Close in Cleanup
	t.Cleanup(func() { _ = srv.Close(); u.closeAll() })
	return u
}

// counts returns how many connections are open and how many were
// accepted.
func (u *closingUpstream) counts() (open, accepted int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns), u.accepted
}

// closeAll closes every connection the upstream holds.
func (u *closingUpstream) closeAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		_ = c.Close()
	}
}

type trackingListener struct {
	net.Listener
	u *closingUpstream
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.u.mu.Lock()
	l.u.conns[c] = true
	l.u.accepted++
	l.u.mu.Unlock()
	return &trackedConn{Conn: c, u: l.u}, nil
}

type trackedConn struct {
	net.Conn
	u *closingUpstream
}

func (c *trackedConn) Close() error {
	c.u.mu.Lock()
	delete(c.u.conns, c.Conn)
	c.u.mu.Unlock()
	return c.Conn.Close()
}
