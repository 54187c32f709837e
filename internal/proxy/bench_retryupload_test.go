package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// uploadSize and uploadWrite are BenchmarkRetryUpload's body: 512 KiB
// sent in writes of 16 KiB.
const (
	uploadSize  = 512 << 10
	uploadWrite = 16 << 10
)

// BenchmarkRetryUpload measures what a streamed upload costs under a
// retry policy that retries resets and 5xx (App Mesh's default route
// retry policy), against none: 512 KiB in 16 KiB writes, chunked and
// with a content-length, from an HTTP/1.1 client to an HTTP/1.1 cluster
// (h1) and to an HTTP/2 cluster (h1h2), and from an h2c client to an
// HTTP/2 cluster (h2c), on the goroutine path and
// on the loops, one request at a time over keep-alive connections. A
// path keeps what it sent of such a body for a retry until the response
// begins, up to route.MaxRetryBuffer; B/op is bytes allocated per
// upload in the whole process (client and upstream too: compare a row
// with its noretry twin). The retried rows have each upload's first
// attempt read the body and answer 503: the retry sends it again from
// what was kept (two uploads' worth of upstream work a row). The h1tls
// and h1h2tls rows are h1 and h1h2 to the same upstream over TLS (Go's
// server, ALPN http/1.1 and h2; the proxy checks its certificate and
// sends its own), as a sidecar's egress to a backend with a client
// policy.
func BenchmarkRetryUpload(b *testing.B) {
	for _, p := range []proxyPath{{"goroutines", true, true}, {"loops", false, false}} {
		for _, hop := range []struct{ name, cluster string }{{"h1", "c"}, {"h1h2", "h2"}, {"h2c", "h2"},
			{"h1tls", "ctls"}, {"h1h2tls", "h2tls"}} {
			for _, rt := range []struct {
				name  string
				route *routev3.Route
			}{{"noretry", routeTo("/", hop.cluster)}, {"retry", retryRoute(hop.cluster, "5xx,reset,connect-failure", 2)},
				{"retried", retryRoute(hop.cluster, "5xx,reset,connect-failure", 2)}} {
				for _, length := range []bool{false, true} {
					framing := "chunked"
					if length {
						framing = "length"
					}
					b.Run(p.name+"/"+hop.name+"/"+rt.name+"/"+framing, func(b *testing.B) {
						benchUpload(b, p, hop.name == "h2c", hop.cluster, rt.route, length, rt.name == "retried")
					})
				}
			}
		}
	}
}

// benchUpload runs one row of BenchmarkRetryUpload: rt routes to
// cluster, one of "c", "h2" (h2c), "ctls" and "h2tls" (HTTP/1.1 and
// HTTP/2 over TLS).
func benchUpload(b *testing.B, p proxyPath, h2 bool, cluster string, rt *routev3.Route, length, retried bool) {
	h := newHarness(b, p.on)
	var attempts atomic.Int64 // one upload at a time: odd ones are first attempts
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		switch {
		case n != uploadSize:
			w.WriteHeader(http.StatusBadRequest)
		case retried && attempts.Add(1)%2 == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	up := h1h2cUpstream(b, handler)
	rs := []types.Resource{
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, rt)),
		edsCluster("c"), cla("c", up),
		edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
		cla("h2", up)}
	if strings.HasSuffix(cluster, "tls") {
		ca := tlstest.NewCA(b, "mesh")
		dir := b.TempDir()
		client := writeLeaf(b, dir, ca, ca.Issue(b, nil, "spiffe://weft.local/mesh/m/virtualNode/front"))
		srv := httptest.NewUnstartedServer(handler)
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(b, []string{"app.local"}).TLS(b)}}
		srv.StartTLS()
		b.Cleanup(srv.Close)
		tlsUp := strings.TrimPrefix(srv.URL, "https://")
		rs = append(rs, edsCluster("ctls", upstreamTLS(client, "app.local", "app.local")), cla("ctls", tlsUp),
			edsCluster("h2tls", h2Upstream, upstreamTLS(client, "app.local", "app.local")), cla("h2tls", tlsUp))
	}
	h.push(rs...)
	c := h2cClient(b)
	if !h2 {
		tr := &http.Transport{}
		b.Cleanup(tr.CloseIdleConnections)
		c = &http.Client{Transport: tr}
	}
	url := "http://" + h.addr("egress") + "/"
	body := make([]byte, uploadSize)
	b.SetBytes(uploadSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req, err := http.NewRequest(http.MethodPost, url, &writesOf{body: body})
		if err != nil {
			b.Fatal(err)
		}
		if length {
			req.ContentLength = uploadSize
		}
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}
}

// writesOf is a request body read from body in pieces of at most
// uploadWrite: each Read is one write of the client's (a chunk when
// chunked).
type writesOf struct{ body []byte }

func (w *writesOf) Read(p []byte) (int, error) {
	if len(w.body) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), uploadWrite)], w.body)
	w.body = w.body[n:]
	return n, nil
}
