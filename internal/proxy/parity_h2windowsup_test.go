package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestH2WindowStreamAloneSharedUpstreamSamePaths: a cluster whose HTTP/2
// options set initial_stream_window_size (4 MiB) and not
// initial_connection_window_size; client 1 asks for a large response and
// reads none of it (it never opens its windows), then client 2 asks the
// same upstream for a small one, which arrives on every path. The
// goroutine path's Transport credits the upstream connection's window
// only as the handler reads a response (x/net), so a connection window
// no larger than one stream's let client 1 take all of it and stall
// client 2's response on the shared upstream connection; unset, the
// connection's window stays x/net's (1 GiB) there, and the loops credit
// it on receipt.
func TestH2WindowStreamAloneSharedUpstreamSamePaths(t *testing.T) {
	const streamWin = 4 << 20
	var written atomic.Int64
	up := h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		chunk := make([]byte, 16384)
		for range 2 * streamWin / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}))
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			written.Store(0)
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))),
				edsCluster("h2", func(c *clusterv3.Cluster) {
					c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{InitialStreamWindowSize: wrapperspb.UInt32(streamWin)}
				}),
				cla("h2", up))
			slow := dialWindowClient(t, h.addr("egress"))
			slow.open(1, "/big")
			slow.end(1)
			_ = slow.bw.Flush()
			// The upstream wrote the stream's window (less a chunk) of the
			// large response: the proxy took it and holds it.
			for last, idle := int64(-1), 0; written.Load() < streamWin-16384; {
				if n := written.Load(); n != last {
					last, idle = n, 0
				} else if idle++; idle == 1000 {
					t.Fatalf("the upstream wrote %d bytes of /big, then nothing for 10 s", n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			c2 := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
				DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}}}
			defer c2.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.addr("egress")+"/small", nil)
			resp, err := c2.Do(req)
			if err != nil {
				t.Fatalf("client 2: %v (the upstream wrote %d bytes of /big)", err, written.Load())
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil || string(body) != "ok" {
				t.Fatalf("client 2 read %q, %v in 10 s, want ok; the upstream wrote %d bytes of /big to client 1, which reads nothing",
					body, err, written.Load())
			}
			t.Logf("client 2 read %q while client 1 held %d bytes of /big", body, written.Load())
		})
	}
}
