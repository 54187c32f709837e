package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestIdleUpstreamBytesSamePaths: bytes an HTTP/1.1 upstream sends on a
// pooled keep-alive connection with no request on it end the connection
// on every path, and count once in the cluster's
// upstream_cx_protocol_error when Envoy's codec client counts them
// (route.ReadIdleBytes): a whole head other than a 408 (the codec's
// premature response, ClientConnectionImpl::onHeadersCompleteBase) and
// bytes that do not parse (a first byte other than 'H'), not a whole 408
// (a server closing a kept-alive connection) nor part of a head and then
// the close (CodecClient::onData, onEvent). The next request goes on a
// new connection and is answered. The loops read such bytes as they
// come; the goroutine path when it checks a connection idle for a second
// before reusing it; over TLS too. Every path closed such a connection
// uncounted.
func TestIdleUpstreamBytesSamePaths(t *testing.T) {
	cases := []struct {
		name, bytes string
		closeWrite  bool // the upstream closes its side after the bytes
		counted     int64
	}{
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 1},
		{"garbage", "garbage\r\n", false, 1},
		{"408", "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false, 0},
		{"partial", "HTTP/1.1 200 OK\r\nContent-Le", true, 0},
	}
	// Each case over a plaintext upstream and a TLS one (the loops read
	// the bytes decrypted, the goroutine path through its tls.Conn).
	ca := tlstest.NewCA(t, "mesh")
	serverCert := ca.Issue(t, []string{"back.local"}).TLS(t)
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/front"))
	// upstream is one case's: its first connection answers one request,
	// then, once write is closed, sends the case's bytes and reads until
	// the proxy closes it (gone); later connections answer "second".
	type upstream struct {
		name, addr  string
		tls         bool
		accepted    atomic.Int32
		write, gone chan struct{}
		counted     int64
	}
	newUpstream := func(name, bytes string, overTLS, closeWrite bool, counted int64) *upstream {
		u := &upstream{name: name, tls: overTLS, write: make(chan struct{}), gone: make(chan struct{}), counted: counted}
		u.addr = tcpUpstream(t, func(raw net.Conn) {
			c := raw
			if overTLS {
				tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{serverCert}})
				defer tc.Close()
				c = tc
			}
			first := u.accepted.Add(1) == 1
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				if !first {
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"); err != nil {
						return
					}
					continue
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
				select {
				case <-u.write:
				case <-time.After(10 * time.Second):
					return
				}
				_, _ = io.WriteString(c, bytes)
				if closeWrite {
					if tc, ok := c.(*tls.Conn); ok {
						_ = tc.CloseWrite() // close_notify
					} else {
						_ = c.(*net.TCPConn).CloseWrite()
					}
				}
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(io.Discard, br) // until the proxy closes it
				close(u.gone)
				return
			}
		})
		return u
	}
	const counter = "upstream_cx_protocol_error"
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		var ups []*upstream
		var routes []*routev3.Route
		rs := []types.Resource{}
		for _, overTLS := range []bool{false, true} {
			for _, c := range cases {
				name := tlsName(c.name, overTLS)
				u := newUpstream(name, c.bytes, overTLS, c.closeWrite, c.counted)
				ups = append(ups, u)
				routes = append(routes, routeTo("/"+name+"/", name))
				cl := staticCluster(name, u.addr)
				if overTLS {
					cl.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: "back.local", CommonTlsContext: client.common(true, "back.local")})
				}
				rs = append(rs, cl)
			}
		}
		rs = append(rs, httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routes...)))
		h.push(rs...)
		res := pathResult{answers: map[string]string{}}
		firsts := map[string]string{}
		for _, u := range ups {
			firsts[u.name] = h1CutAnswer(t, h.addr("egress"), "GET", "/"+u.name+"/1")
			close(u.write)
		}
		// The goroutine path checks a pooled connection for what its
		// upstream sent only once it has been idle a second (the
		// cluster's staleAfter), and no event marks that second. The
		// margin covers the proxy putting the last connection back in
		// its pool after the client had the answer (on a loaded
		// machine): one reused before its second passed would carry
		// the next request and read the case's bytes as its answer.
		time.Sleep(1500 * time.Millisecond)
		for _, u := range ups {
			second := h1CutAnswer(t, h.addr("egress"), "GET", "/"+u.name+"/2")
			select {
			case <-u.gone:
			case <-time.After(5 * time.Second):
				t.Errorf("%s, %s: the proxy kept the connection the upstream sent bytes on", p.name, u.name)
			}
			counted := h.stat("cluster." + u.name + "." + counter)
			res.answers[u.name] = fmt.Sprintf("%s, then %s; %s %d; connections %d", firsts[u.name], second, counter, counted, u.accepted.Load())
			if firsts[u.name] != `200 "first"` || second != `200 "second"` || counted != u.counted || u.accepted.Load() != 2 {
				t.Errorf("%s, %s: answered %s, then %s; %s %d, connections %d; want 200 \"first\", then 200 \"second\"; %d, 2",
					p.name, u.name, firsts[u.name], second, counter, counted, u.accepted.Load(), u.counted)
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// tlsName names a case's cluster: tls_<name> over TLS.
func tlsName(name string, overTLS bool) string {
	if overTLS {
		return "tls_" + name
	}
	return name
}
