package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestGoAwayRefusedSamePaths: an HTTP/2 upstream's stream above the
// last-stream-id of a GOAWAY it sent is a refused stream on every path,
// as Envoy's codec closes it REFUSED_STREAM whatever the GOAWAY's code
// (nghttp2's session_close_stream_on_goaway, oghttp2's OnGoAway) and its
// router takes that for a remote refused stream reset: with no retry
// policy that may send it again it is answered 503 UR
// upstream_reset_before_response_started{remote_refused_stream_reset}
// after one attempt, counted as a refused stream (no
// upstream_rq_rx_reset); under retry_on refused-stream or reset it is
// sent again, on another connection, with its body, and the second
// attempt answers.
// Each upstream leaves its first stream out of a GOAWAY, NO_ERROR with
// the connection kept open, or INTERNAL_ERROR with the connection closed
// (x/net's error then differs for a connection's first stream), and
// answers the others. The goroutine path's h2RT sent such a stream again
// on another connection itself, whatever the retry policy (a 200 with no
// retry counted), and took the INTERNAL_ERROR one for a connection
// termination (503 UC).
// Each upstream is h2c and, with an upstream twin, HTTP/2 over mutual TLS
// (its connection closed by close_notify), which the loops served as the
// h2c one (an HTTP/1.1 client's request to it was handed off until
// round 30: on the loops nothing is).
func TestGoAwayRefusedSamePaths(t *testing.T) {
	type upstream struct {
		code    http2.ErrCode
		close   bool
		retryOn string // "": no retry policy
		overTLS bool
		streams atomic.Int32
		addr    string
	}
	var ups []*upstream
	for _, overTLS := range []bool{false, true} {
		for _, retryOn := range []string{"", "refused-stream", "reset"} {
			ups = append(ups, &upstream{code: http2.ErrCodeNo, retryOn: retryOn, overTLS: overTLS},
				&upstream{code: http2.ErrCodeInternal, close: true, retryOn: retryOn, overTLS: overTLS})
		}
	}
	name := func(u *upstream) string {
		policy := u.retryOn
		if policy == "" {
			policy = "none"
		}
		if u.overTLS {
			policy = "tls-" + policy
		}
		return strings.ToLower(fmt.Sprintf("%s-%v", policy, u.code))
	}
	ca := tlstest.NewCA(t, "mesh")
	app := "spiffe://weft.local/mesh/m/virtualNode/app"
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"app.local"}, app).TLS(t)}, NextProtos: []string{"h2"},
		ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/proxy"))
	for _, u := range ups {
		respond := func(w *rawH2Writer, id uint32, r *rawH2Request) {
			if u.streams.Add(1) > 1 {
				// The request's body, as this stream had it.
				w.headers(id, false, 0, ":status", "200", "content-length", fmt.Sprint(len(r.body)))
				w.data(id, r.body)
				return
			}
			last := uint32(0)
			if id > 2 {
				last = id - 2
			}
			_ = w.fr.WriteGoAway(last, u.code, nil)
			if u.close {
				_ = w.bw.Flush()
				// A FIN (over TLS close_notify): what the proxy has yet
				// to read stays unread.
				_ = w.c.(interface{ CloseWrite() error }).CloseWrite()
			}
		}
		if !u.overTLS {
			u.addr = rawH2Upstream(t, respond)
			continue
		}
		u.addr = tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection or breaks HTTP/2
			tc := tls.Server(c, serverTLS)
			if tc.Handshake() == nil {
				serveRawH2(tc, respond)
			}
		})
	}
	// The route timeout is long: an answer before it is never the
	// timeout's (504).
	const routeTimeout = 10 * time.Second
	var routes []*routev3.Route
	for _, u := range ups {
		r := routeTo("/"+name(u)+"/", name(u))
		r.GetRoute().Timeout = durationpb.New(routeTimeout)
		if u.retryOn != "" {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: u.retryOn, NumRetries: u32(2),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
		}
		routes = append(routes, r)
	}
	const refused = "503 upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
	names := []string{"upstream_rq_total", "upstream_rq_completed", "upstream_rq_200", "upstream_rq_503",
		"upstream_rq_rx_reset", "upstream_rq_tx_reset", "upstream_rq_retry", "upstream_rq_retry_success",
		"upstream_rq_retry_limit_exceeded", "upstream_rq_timeout"}
	var first string
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			res := []types.Resource{routeConfig("rds", vhost("v", []string{"*"}, routes...))}
			for _, u := range ups {
				u.streams.Store(0)
				mods := []func(*clusterv3.Cluster){h2Upstream}
				if u.overTLS {
					mods = append(mods, upstreamTLS(client, "app.local", app))
				}
				res = append(res, edsCluster(name(u), mods...), cla(name(u), u.addr))
			}
			h, logFile := loggedEgress(t, p, cutLogFormat(), res...)
			cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			var wantLog []string
			want := map[string]int64{}
			for _, u := range ups {
				path := "/" + name(u) + "/"
				body := "the body of " + path
				start := time.Now()
				resp, err := cl.Post("http://"+h.addr("egress")+path, "text/plain", strings.NewReader(body))
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				got := resp.Status[:3] + " " + string(b)
				if took := time.Since(start); took >= routeTimeout {
					t.Errorf("%s: answered after %v, the route timeout", path, took)
				}
				answer, streams, line := refused, int32(1), "HTTP/1.1 "+path+" 503 UR upstream_reset_before_response_started{remote_refused_stream_reset}"
				stat := "cluster." + name(u) + "."
				want[stat+"upstream_rq_total"] = 1
				if u.retryOn != "" {
					answer, streams, line = "200 "+body, 2, "HTTP/1.1 "+path+" 200 - via_upstream"
					want[stat+"upstream_rq_total"] = 2
					want[stat+"upstream_rq_retry"] = 1
					want[stat+"upstream_rq_retry_success"] = 1
				}
				if got != answer {
					t.Errorf("%s: answered %q; want %q", path, got, answer)
				}
				if n := u.streams.Load(); n != streams {
					t.Errorf("%s: the upstream saw %d streams; want %d", path, n, streams)
				}
				want[stat+"upstream_rq_rx_reset"] = 0
				want[stat+"upstream_rq_tx_reset"] = 0
				wantLog = append(wantLog, line)
			}
			waitStats(t, h, want)
			if log, want := awaitLog(t, logFile, len(ups)), sortLines(strings.Join(wantLog, "\n")+"\n"); log != want {
				t.Errorf("access log\n%s\nwant\n%s", log, want)
			}
			var got []string
			for _, u := range ups {
				got = append(got, name(u)+":\n"+h.counts("cluster."+name(u)+".", names))
			}
			if l := h.listener("egress"); !p.goroutines && !p.h2Goroutines && l.HandedOff() != 0 {
				t.Errorf("%d connections handed off, want none on the loops", l.HandedOff())
			}
			if all := strings.Join(got, "\n"); first == "" {
				first = all
			} else if all != first {
				t.Errorf("counters\n%s\nthe first path's\n%s", all, first)
			}
		})
	}
}
