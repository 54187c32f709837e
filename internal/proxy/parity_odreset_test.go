package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
)

// cutUpstream serves over HTTP/1.1 and h2c until the test ends, and
// returns its address. By the request's path: /cut/<status> a head of
// status with a content-length of 100 and 10 bytes of body, then the
// stream reset (over HTTP/1.1, the connection closed mid-body); /stall
// a 200 head and 10 bytes, then nothing until the proxy gives the
// request up.
func cutUpstream(t *testing.T) string {
	t.Helper()
	return h1h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		status := 200
		if s, ok := strings.CutPrefix(r.URL.Path, "/cut/"); ok && s == "503" {
			status = 503
		}
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "0123456789")
		_ = http.NewResponseController(w).Flush()
		if r.URL.Path == "/stall" {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		panic(http.ErrAbortHandler)
	}))
}

// getCut sends GET path for host to the proxy at addr on c and reads the
// answer to its end; true when it broke after the head.
func getCut(t *testing.T, c *http.Client, addr, host, path string) bool {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err != nil
}

// cutCombo is a pair of client and upstream protocols: h2c to HTTP/2
// (the loops' streams), HTTP/1.1 to HTTP/2, h2c to HTTP/1.1 and HTTP/1.1
// to HTTP/1.1.
type cutCombo struct {
	name    string
	h2c, h2 bool // the client's protocol, the upstream's
}

var cutCombos = []cutCombo{{"h2", true, true}, {"h1h2", false, true}, {"h2h1", true, false}, {"h1", false, false}}

// cluster is the cluster name, with mods, of the combination's upstream
// protocol, and its one host up.
func (c cutCombo) cluster(name, up string, mods ...func(*clusterv3.Cluster)) []types.Resource {
	if c.h2 {
		mods = append(mods, h2Upstream)
	}
	return []types.Resource{edsCluster(name, mods...), cla(name, up)}
}

// client is h1 or h2, whichever speaks the combination's client protocol.
func (c cutCombo) client(h1, h2 *http.Client) *http.Client {
	if c.h2c {
		return h2
	}
	return h1
}

// ejectAfter is outlier detection that ejects a host after n consecutive
// 5xx, for an hour (the test's whole length).
func ejectAfter(n uint32) func(*clusterv3.Cluster) {
	return func(cl *clusterv3.Cluster) {
		cl.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: u32(n), Interval: durationpb.New(time.Hour),
			BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionPercent: u32(100)}
	}
}

// TestUpstreamCutOutlierSamePaths: an upstream's reset of a response
// after its head (an HTTP/2 RST_STREAM, an HTTP/1.1 connection closed
// mid-body) is seen by outlier detection, as Envoy's router gives its
// detector a local-origin connect failure on every upstream reset
// (Filter::onUpstreamReset, updateOutlierDetection), a 503 with local and
// external errors not split (putResultNoLocalExternalSplit), where every
// path saw the head alone. Counted after the head's own status: a 200
// head resets the consecutive counts and its reset counts one, so
// consecutive_5xx 1 ejects after one such response and 2 after none of
// three; a 503 head and its reset count two, so consecutive_5xx 2 ejects
// after one; an HTTP/2 upstream's connection that ends or fails for its
// protocol error after the head counts as its stream's reset. On every pair of client and upstream
// protocols.
func TestUpstreamCutOutlierSamePaths(t *testing.T) {
	cases := []struct {
		name   string // with the combo's: the cluster, and the request's host
		consec uint32
		path   string
		n      int   // requests
		eject  int64 // ejections_enforced_consecutive_5xx after them
	}{{"ok1", 1, "/cut/200", 1, 1}, {"ok2", 2, "/cut/200", 3, 0}, {"bad2", 2, "/cut/503", 1, 1}}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			up := cutUpstream(t)
			var vhs []*routev3.VirtualHost
			rs := []types.Resource{httpListener("egress", httpManager("egress", "rds"))}
			for _, c := range cutCombos {
				for _, k := range cases {
					name := c.name + "-" + k.name
					vhs = append(vhs, vhost(name, []string{name}, routeTo("/", name)))
					rs = append(rs, c.cluster(name, up, ejectAfter(k.consec))...)
				}
			}
			// An HTTP/2 upstream whose connection, after the head, ends
			// (/close) or fails for its protocol error (/proto: trailers
			// without END_STREAM), from either client.
			raw := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
				w.headers(id, false, 0, ":status", "200", "content-length", "100")
				_ = w.fr.WriteData(id, false, []byte("0123456789"))
				if strings.Join(r.values(":path"), "") == "/proto" {
					w.headers(id, false, 0, "x-trailer", "1")
					return
				}
				_ = w.bw.Flush()
				_ = w.c.Close()
			})
			for _, c := range cutCombos[:2] {
				for _, end := range []string{"close", "proto"} {
					name := c.name + "-" + end
					vhs = append(vhs, vhost(name, []string{name}, routeTo("/", name)))
					rs = append(rs, edsCluster(name, h2Upstream, ejectAfter(1)), cla(name, raw))
				}
			}
			h.push(append(rs, routeConfig("rds", vhs...))...)
			h1, h2 := &http.Client{Timeout: 10 * time.Second}, h2cClient(t)
			want := map[string]int64{}
			for _, c := range cutCombos {
				cl := c.client(h1, h2)
				for _, end := range []string{"close", "proto"} {
					if !c.h2 {
						break
					}
					name := c.name + "-" + end
					if !getCut(t, cl, h.addr("egress"), name, "/"+end) {
						t.Errorf("%s/%s: not cut after the head", name, end)
					}
					want["cluster."+name+".outlier_detection.ejections_enforced_consecutive_5xx"] = 1
				}
				for _, k := range cases {
					name := c.name + "-" + k.name
					for range k.n {
						if !getCut(t, cl, h.addr("egress"), name, k.path) {
							t.Errorf("%s%s: not cut after the head", name, k.path)
						}
					}
					want["cluster."+name+".outlier_detection.ejections_enforced_consecutive_5xx"] = k.eject
				}
			}
			waitStats(t, h, want)
			time.Sleep(50 * time.Millisecond) // an ejection that came late came after all
			for s, v := range want {
				if got := h.stat(s); got != v {
					t.Errorf("%s = %d then, want %d", s, got, v)
				}
			}
		})
	}
}

// TestRouteTimeoutAfterHeadHostSamePaths: a route timeout that cuts a
// response after its head counts its host's rq_timeout (in /clusters)
// and the cluster's upstream_rq_timeout, as Envoy's router counts both
// for every upstream request in flight, its head seen or not
// (Filter::onResponseTimeout), where no path counted the host's; the
// 200 head counted rq_success, and nothing counts rq_error
// (chargeUpstreamAbort is for a request awaiting its head). On every
// pair of client and upstream protocols.
func TestRouteTimeoutAfterHeadHostSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			up := cutUpstream(t)
			var vhs []*routev3.VirtualHost
			rs := []types.Resource{httpListener("egress", httpManager("egress", "rds"))}
			for _, c := range cutCombos {
				rt := routeTo("/", c.name)
				rt.GetRoute().Timeout = durationpb.New(300 * time.Millisecond)
				vhs = append(vhs, vhost(c.name, []string{c.name}, rt))
				rs = append(rs, c.cluster(c.name, up)...)
			}
			h.push(append(rs, routeConfig("rds", vhs...))...)
			h1, h2 := &http.Client{Timeout: 10 * time.Second}, h2cClient(t)
			want := map[string]int64{}
			for _, c := range cutCombos {
				cl := c.client(h1, h2)
				if !getCut(t, cl, h.addr("egress"), c.name, "/stall") {
					t.Errorf("%s/stall: not cut after the head", c.name)
				}
				want["cluster."+c.name+".upstream_rq_timeout"] = 1
			}
			counters := []string{"rq_total", "rq_success", "rq_error", "rq_timeout", "rq_active"}
			for _, c := range cutCombos {
				waitHostCounts(t, h, c.name, up, "rq_total=1 rq_success=1 rq_error=0 rq_timeout=1 rq_active=0", counters...)
			}
			waitStats(t, h, want)
		})
	}
}

// TestClientEndNoCutOutlierSamePaths: a response the client ends after
// its head (its stream reset, its connection closed) and an upgraded
// connection the client closes are not seen by outlier detection, as
// Envoy's router resets its upstream request with its callbacks removed
// (UpstreamRequest::resetStream), so no onUpstreamReset: with
// consecutive_5xx 1 nothing is ejected. On every pair of client and
// upstream protocols, and for a 101.
func TestClientEndNoCutOutlierSamePaths(t *testing.T) {
	ws := tcpUpstream(t, func(c net.Conn) { // a 101, then what comes until the proxy closes
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(io.Discard, c)
	})
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			up := cutUpstream(t)
			od := ejectAfter(1)
			wsr := routeTo("/ws", "ws")
			wsr.GetRoute().Timeout = durationpb.New(0)
			vhs := []*routev3.VirtualHost{vhost("ws", []string{"ws"}, wsr)}
			rs := []types.Resource{httpListener("egress", httpManager("egress", "rds", func(m *hcmv3.HttpConnectionManager) {
				m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
			})), edsCluster("ws", od), cla("ws", ws)}
			for _, c := range cutCombos {
				vhs = append(vhs, vhost(c.name, []string{c.name}, routeTo("/", c.name)))
				rs = append(rs, c.cluster(c.name, up, od)...)
			}
			h.push(append(rs, routeConfig("rds", vhs...))...)
			h1, h2 := &http.Client{Timeout: 10 * time.Second}, h2cClient(t)
			for _, c := range cutCombos {
				cl := c.client(h1, h2)
				ctx, cancel := context.WithCancel(context.Background())
				req, err := http.NewRequestWithContext(ctx, "GET", "http://"+h.addr("egress")+"/stall", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = c.name
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				_, _ = io.ReadFull(resp.Body, make([]byte, 10))
				cancel() // the client's reset (h2c) or its connection closed
				_ = resp.Body.Close()
			}
			c, _ := openUpgraded(t, h.addr("egress"), "ws")
			_ = c.Close() // the client's end of the upgraded connection
			counters := []string{"rq_active"}
			for _, c := range cutCombos {
				waitHostCounts(t, h, c.name, up, "rq_active=0", counters...)
			}
			waitHostCounts(t, h, "ws", ws, "rq_active=0", counters...)
			time.Sleep(100 * time.Millisecond) // an ejection that came late came after all
			for _, c := range append(cutCombos, cutCombo{name: "ws"}) {
				if n := h.stat("cluster." + c.name + ".outlier_detection.ejections_enforced_consecutive_5xx"); n != 0 {
					t.Errorf("%s: ejections_enforced_consecutive_5xx %d after the client's end; want 0", c.name, n)
				}
			}
		})
	}
}
