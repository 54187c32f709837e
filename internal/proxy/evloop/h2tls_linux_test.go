package evloop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// alpnClientTLS originates TLS to an httptest server, offering the ALPN
// the loop asks for, as tlsctx.Client does.
type alpnClientTLS struct {
	roots *x509.CertPool
	max   uint16 // the highest TLS version; 0 is crypto/tls's
}

func (c alpnClientTLS) Handshake(ctx context.Context, raw net.Conn, alpn tlsctx.ALPN) (net.Conn, error) {
	protos := []string{"http/1.1"}
	if alpn == tlsctx.ALPNH2 {
		protos = []string{"h2"}
	}
	tc := tls.Client(raw, &tls.Config{RootCAs: c.roots, ServerName: "127.0.0.1", NextProtos: protos, MaxVersion: c.max})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// h2TLSServer is a TLS handshake for the loops with a certificate for
// "proxy.local", offering ALPN h2 and http/1.1, and the client's
// configuration for it.
func h2TLSServer(t *testing.T) (*TLS, *tls.Config) {
	ca := tlstest.NewCA(t, "mesh")
	hs := tlsrec.Server(&tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"proxy.local"}).TLS(t)},
		NextProtos: []string{"h2", "http/1.1"}})
	return &TLS{Handshake: hs}, &tls.Config{RootCAs: ca.Pool(), ServerName: "proxy.local", NextProtos: []string{"h2"}}
}

// TestH2TLSLoopBothWays: HTTP/2 over TLS on both sides of a loop: a
// client's TLS connection that negotiated h2 is served by the loop's
// HTTP/2 server (not handed off: there is no HandOff), and its streams go
// out over the loop's own HTTP/2 connection over TLS to the upstream
// (ALPN h2), concurrently and with bodies beyond the windows; the
// upstream sees HTTP/2 over TLS and X-Forwarded-Proto https. With TLS 1.2
// and 1.3 to the upstream (1.2's server sends its SETTINGS right behind
// its last handshake message).
func TestH2TLSLoopBothWays(t *testing.T) {
	for _, maxV := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(maxV), func(t *testing.T) {
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s tls=%v alpn=%s xfp=%s len=%d\n", r.Proto, r.TLS != nil, r.TLS.NegotiatedProtocol,
					r.Header.Get("X-Forwarded-Proto"), len(body))
			}))
			up.EnableHTTP2 = true
			up.StartTLS()
			t.Cleanup(up.Close)
			roots := x509.NewCertPool()
			roots.AddCert(up.Certificate())
			host := netip.MustParseAddrPort(strings.TrimPrefix(up.URL, "https://"))
			server, client := h2TLSServer(t)
			srv, _ := start(t, Config{Loops: 1, H2: true, TLS: server, Router: h2RouterFunc(func(proxyroute.Head) Target {
				return Target{Cluster: "c", Host: host, HTTP2: true, TLS: alpnClientTLS{roots, maxV}}
			})})
			tr := &http2.Transport{TLSClientConfig: client}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			big := strings.Repeat("x", 200<<10)
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Add(1)
				go func() { // one stream; ends with its response
					defer wg.Done()
					body := ""
					if i%2 == 0 {
						body = big
					}
					resp, err := c.Post("https://"+srv.Addr()+"/", "text/plain", strings.NewReader(body))
					if err != nil {
						t.Error(err)
						return
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					want := fmt.Sprintf("HTTP/2.0 tls=true alpn=h2 xfp=https len=%d\n", len(body))
					if resp.ProtoMajor != 2 || string(b) != want {
						t.Errorf("stream %d: HTTP/%d %q, want %q", i, resp.ProtoMajor, b, want)
					}
				}()
			}
			wg.Wait()
			if n, tc, ups := srv.H2Conns(), srv.TLSConns(), srv.H2UpstreamStreams(); n != 1 || tc != 1 || ups != 8 {
				t.Errorf("the loop served %d HTTP/2 connections (%d over TLS), sent %d streams upstream; want 1 (1), 8", n, tc, ups)
			}
		})
	}
}

// h2RouterFunc is an H2Router routing every request with a function.
type h2RouterFunc func(proxyroute.Head) Target

func (f h2RouterFunc) Route(h proxyroute.Head) Target   { return f(h) }
func (f h2RouterFunc) RouteH2(h proxyroute.Head) Target { return f(h) }
func (f h2RouterFunc) H2() (H2Settings, bool) {
	return H2Settings{MaxStreams: 100, MaxHeaderList: 8 << 10, ResetLifetime: time.Second}, true
}

// dialH2TLS opens an HTTP/2 connection over TLS to srv with client's
// configuration: the preface and empty SETTINGS sent.
func dialH2TLS(t *testing.T, srv *Server, client *tls.Config) *h2Raw {
	t.Helper()
	tc, err := tls.Dial("tcp", srv.Addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	h := &h2Raw{t: t, c: tc, fr: http2.NewFramer(tc, tc)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = h.fr.WriteSettings()
	return h
}

// TestH2TLSLoopPingsDoNotKeepIdle: over TLS too, PINGs alone do not keep
// an HTTP/2 connection without a stream from its idle timeout.
func TestH2TLSLoopPingsDoNotKeepIdle(t *testing.T) {
	server, client := h2TLSServer(t)
	srv := startH2(t, func(c *Config) { c.IdleTimeout, c.TLS = 300*time.Millisecond, server })
	h := dialH2TLS(t, srv, client)
	pingUntilGoAway(t, h)
	if srv.H2Conns() != 1 {
		t.Errorf("the loop served %d HTTP/2 connections, want 1", srv.H2Conns())
	}
}

// TestH2TLSLoopPingFloodBounded: over TLS, a client that sends PINGs and
// reads none of their answers is read no further once they fill the
// socket and h2MaxOut (the records sealed for the socket add at most one
// write's worth), as in plaintext; once it reads, a stream is served.
func TestH2TLSLoopPingFloodBounded(t *testing.T) {
	server, client := h2TLSServer(t)
	pingFloodBounded(t, dialH2TLS(t, startH2(t, func(c *Config) { c.TLS = server }), client))
}
