package evloop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// testClientTLS originates TLS to httptest's TLS servers.
type testClientTLS struct{ roots *x509.CertPool }

func (c testClientTLS) Handshake(ctx context.Context, raw net.Conn, _ tlsctx.ALPN) (net.Conn, error) {
	tc := tls.Client(raw, &tls.Config{RootCAs: c.roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// oneHost is an Upstream whose load balancer always picks host.
type oneHost struct{ host netip.AddrPort }

func (oneHost) Retry() func()    { return func() {} }
func (oneHost) RetryEnd(bool)    {}
func (oneHost) RetryAbandoned()  {}
func (oneHost) PerTryTimeout()   {}
func (oneHost) Acquire(any) bool { return true }
func (oneHost) Release(Slots)    {}
func (o oneHost) Pick(func(any) bool, int) (netip.AddrPort, any, bool) {
	return o.host, o.host, true
}

// TestRetryKeepsClusterTLS: a retry sent to another host of a TLS
// cluster originates TLS as the first attempt did (its host's pool is
// new to the loop).
func TestRetryKeepsClusterTLS(t *testing.T) {
	failing := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	}))
	t.Cleanup(failing.Close)
	good := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "second host, over TLS")
	}))
	t.Cleanup(good.Close)
	roots := x509.NewCertPool()
	roots.AddCert(failing.Certificate())
	first := netip.MustParseAddrPort(strings.TrimPrefix(failing.URL, "https://"))
	second := netip.MustParseAddrPort(strings.TrimPrefix(good.URL, "https://"))
	policy := &proxyroute.RetryPolicy{On: proxyroute.On5xx, NumRetries: 1, BackoffBase: time.Millisecond, BackoffMax: time.Millisecond}
	srv, _ := start(t, Config{Loops: 1, Router: routerFunc(func(proxyroute.Head) Target {
		return Target{Cluster: "c", Host: first, TLS: testClientTLS{roots}, Retry: policy, Upstream: oneHost{second}}
	})})
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + srv.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "second host, over TLS" {
		t.Fatalf("retried request: %d %q, want 200 from the second host over TLS", resp.StatusCode, body)
	}
}
