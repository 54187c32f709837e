package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestRemovedHostFallbackIdleDrainedSamePaths: a removed host's idle
// connection of the goroutine path's fallback Transport (net/http's, for
// a request body of unknown length: a chunked POST) is closed at once by
// the EDS update that removes the host, as the path's own pools drain
// theirs and as Envoy drains a removed host's pools
// (ThreadLocalClusterManagerImpl::removeHosts), on every path; the other
// host's stays open and is reused. Until round 32 the fallback kept it
// until the cluster's idle timeout (an hour by default): h1Client.forget
// drained its own pool only.
func TestRemovedHostFallbackIdleDrainedSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				_, _ = io.WriteString(w, "got "+string(b))
			})
			gone, stays := newClosingUpstreamWith(t, false, nil, echo), newClosingUpstreamWith(t, false, nil, echo)
			h := newHarness(t, p.on)
			base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c")}
			h.push(append(base, cla("c", gone.addr, stays.addr))...)
			url := "http://" + h.addr("egress") + "/x"
			c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer c.Transport.(*http.Transport).CloseIdleConnections()
			post := func() {
				t.Helper()
				// A body of unknown length: sent chunked.
				resp, err := c.Post(url, "text/plain", io.NopCloser(strings.NewReader("hello")))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "got hello" {
					t.Fatalf("POST: %d %q, want 200 \"got hello\"", resp.StatusCode, b)
				}
			}
			waitUntil(t, 10*time.Second, "a connection to each host", func() bool {
				post()
				a, _ := gone.counts()
				b, _ := stays.counts()
				return a > 0 && b > 0
			})
			openStays, acceptedStays := stays.counts()

			h.push(append(base, cla("c", stays.addr))...)
			// The upstream sees the close: its server's read ends.
			waitUntil(t, 20*time.Second, "the removed host's connection closed by the proxy", func() bool {
				open, _ := gone.counts()
				return open == 0
			})
			post()
			if open, accepted := stays.counts(); open != openStays || accepted != acceptedStays {
				t.Errorf("the host that stays: %d connections open, %d accepted; want %d and %d, kept and reused",
					open, accepted, openStays, acceptedStays)
			}
		})
	}
}

// TestRemovedHostFallbackBusyDrainedSamePaths: a removed host's
// connection of the goroutine path's fallback Transport that serves a
// request when the update comes finishes it intact, then is closed as it
// goes idle, on every path, as Envoy's drained pool closes such a
// connection once its stream ends. Until round 32 the fallback kept it.
func TestRemovedHostFallbackBusyDrainedSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			held, release := make(chan struct{}, 1), make(chan struct{})
			up := newClosingUpstreamWith(t, false, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				held <- struct{}{}
				<-release
				_, _ = io.WriteString(w, "got "+string(b))
			}))
			h := newHarness(t, p.on)
			base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c")}
			h.push(append(base, cla("c", up.addr))...)
			c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer c.Transport.(*http.Transport).CloseIdleConnections()
			answer := make(chan string, 1)
			go func() { // ends when the POST is answered (release below) or fails
				resp, err := c.Post("http://"+h.addr("egress")+"/x", "text/plain", io.NopCloser(strings.NewReader("hello")))
				if err != nil {
					answer <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				answer <- resp.Status[:3] + " " + string(b)
			}()
			<-held
			h.push(append(base, cla("c"))...)
			close(release)
			if a := <-answer; a != "200 got hello" {
				t.Fatalf("the held POST: %q, want 200 \"got hello\"", a)
			}
			waitUntil(t, 20*time.Second, "the removed host's connection closed by the proxy once idle", func() bool {
				open, _ := up.counts()
				return open == 0
			})
		})
	}
}

// TestRemovedHostFallbackStrayDrainedSamePaths: a connection of the
// goroutine path's fallback Transport that net/http put in its idle pool
// without any request's hooks (its dial outlived the request that
// started it: the request's route timeout came during the upstream's TLS
// handshake, and net/http pools what the dial brings) is closed too when
// its host is removed, on every path. Until the fix it stayed open, out of
// the hooks' set of idle connections, until the cluster's idle timeout.
func TestRemovedHostFallbackStrayDrainedSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/front"))
	leaf := ca.Issue(t, []string{"back.local"})
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			up := &closingUpstream{addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
			arrived, gate := make(chan struct{}, 1), make(chan struct{})
			tlsCfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS(t)}, NextProtos: []string{"http/1.1"}}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })}
			go func() { // ends with srv.Close in Cleanup
				_ = srv.Serve(tls.NewListener(gatedListener{trackingListener{ln, up}, arrived, gate}, tlsCfg))
			}()
			t.Cleanup(func() { _ = srv.Close(); up.closeAll() })
			h := newHarness(t, p.on)
			var opened sync.Once
			release := func() { opened.Do(func() { close(gate) }) }
			t.Cleanup(release) // before the harness's: the proxy's connect must end
			r := routeTo("/", "c")
			r.GetRoute().Timeout = durationpb.New(200 * time.Millisecond)
			longConnect := func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(time.Minute) }
			base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, r)), edsCluster("c", upstreamTLS(client, "back.local", "back.local"), longConnect)}
			h.push(append(base, cla("c", up.addr))...)
			// An expectation holding 100-continue among others (forwarded:
			// the fallback), its upstream's handshake held past the route
			// timeout.
			cc, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(cc, "GET /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, foo\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(cc), nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 504 {
				t.Fatalf("GET: %s, want 504 (the route timeout)", resp.Status)
			}
			<-arrived
			release() // the handshake goes on: a connection the proxy kept is pooled
			waitUntil(t, 10*time.Second, "the held connection's handshake done, or the connection closed", func() bool {
				open, _ := up.counts()
				return h.stat("cluster.c.ssl.handshake") >= 1 || open == 0
			})
			h.push(append(base, cla("c"))...)
			waitUntil(t, 20*time.Second, "the removed host's connection closed by the proxy", func() bool {
				open, _ := up.counts()
				return open == 0
			})
		})
	}
}

// gatedListener holds each connection it accepted until gate closes,
// after telling arrived: a TLS server's handshake waits until then.
type gatedListener struct {
	net.Listener
	arrived chan<- struct{}
	gate    <-chan struct{}
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.arrived <- struct{}{}:
	default:
	}
	<-l.gate
	return c, nil
}
