package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

type hostKey struct{}

// WithHost returns a context that tells the dialer which host a new
// upstream connection is for, so connection stats land on it.
func WithHost(ctx context.Context, h *Host) context.Context {
	return context.WithValue(ctx, hostKey{}, h)
}

// ConnectError is a failed upstream connect (response flag UF).
type ConnectError struct {
	Addr    string
	Timeout bool
	Err     error
}

func (e *ConnectError) Error() string {
	if e.Timeout {
		return "connect " + e.Addr + ": timeout"
	}
	return "connect " + e.Addr + ": " + e.Err.Error()
}

func (e *ConnectError) Unwrap() error { return e.Err }

// maxGate bounds the HTTP/1.1 max_connections weft enforces. Below it
// (Envoy's default of 1,024, a cluster without circuit breakers, and
// App Mesh's connection pools included) an exchange holds one of
// max_connections (the gate, whose pending queue is also capped at
// maxGate) and each host's transport opens at most as many connections.
// At or above it (App Mesh's wide-open 2147483647) there is no gate:
// HTTP/1.1 connections are pooled freely and only counted
// (upstream_cx_active), and a request takes no lock (Acquire,
// TryAcquire).
const maxGate = 1 << 16

func (c *Cluster) transports() {
	newT := func() *http.Transport {
		t := &http.Transport{
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     c.idleTimeout(),
			// The proxy passes bodies through untouched: no transparent
			// gzip, no proxy from the environment.
			DisableCompression: true,
			Proxy:              nil,
			ForceAttemptHTTP2:  false,
			// Envoy's max_response_headers_kb default, as h1Client
			// bounds a head (IsProtocolError tells the refusal).
			MaxResponseHeaderBytes: route.MaxHeadBytes,
		}
		if c.cb.maxConnections < maxGate {
			t.MaxConnsPerHost = int(c.cb.maxConnections)
		}
		p := new(http.Protocols)
		p.SetHTTP1(true)
		t.Protocols = p
		return t
	}
	if c.HTTP2 || c.UseDownstream {
		c.h2 = c.newH2Transport()
		c.h2pool = newH2Pool(c, c.h2)
		c.h2.ConnPool = c.h2pool
	}
	if !c.HTTP2 || c.UseDownstream {
		c.h1 = newH1Client(c, newT())
		c.h1.fallback.DialContext = c.h1.dialFallback // knows each connection's host (h1fallback.go)
		if c.cb.maxConnections < maxGate {
			c.gate = &gate{maxActive: int(c.cb.maxConnections), maxPending: int(min(c.cb.maxPending, maxGate))}
		}
	}
}

// newH2Transport is a cluster's HTTP/2 transport: golang.org/x/net/http2's
// Transport on its own. net/http's Transport speaking h2c put each
// request through its HTTP/1.1 connection pool first (a wanted-connection
// record, a cancelable context and a queue per request) before handing it
// to the same HTTP/2 client: 5 % of weft proxy's CPU on the h2c path at
// 1,000 requests/s, and a deeper stack on the handler's goroutine, which
// grows by copying (docs/bench/proxy.md, round 10). Neither holds HTTP/2
// connections to max_connections: net/http's MaxConnsPerHost did not
// bind on its h2c connections (set to 1, it opened one per stream of an
// upstream allowing one), and this Transport opens a connection when the
// streams of those it has are all taken; max_requests holds the streams
// (Acquire). Dials go through dialH2 as before; the scheme stays http
// (TLS, when the cluster has it, is the dialer's).
//
// The windows it gives the upstream are x/net's (4 MiB a stream, 1 GiB
// the connection), each unless the cluster's HTTP/2 options set it
// (H2Windows; one set alone leaves the other x/net's: the connection's
// is credited only as the handlers read the responses, so one no larger
// than a stream's would let one client that reads nothing stall every
// response on the connection): x/net's Transport reads them only from net/http's
// Transport it was configured for (HTTP2.MaxReceiveBufferPerStream and
// PerConnection), so a Transport carrying just those is configured, and
// never used otherwise: its other fields are zero, which x/net reads as
// it reads no Transport (DisableCompression, IdleConnTimeout and the
// header limits are this one's). Its ConnPool is the caller's to set:
// configured so, x/net's own pool never dials (noDialClientConnPool).
func (c *Cluster) newH2Transport() *http2.Transport {
	const h2InitialWindow = 65535 // RFC 9113's
	t := &http2.Transport{}
	if w := c.H2Windows; w != (route.H2Windows{}) {
		// x/net raises the connection's window by
		// MaxReceiveBufferPerConnection, from RFC 9113's 65,535 (no less
		// than 65,535: below, its default): w.Conn exactly from 131,070.
		// Zero: x/net's.
		carrier := &http.Transport{HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: int(w.Stream)}}
		if w.Conn != 0 {
			carrier.HTTP2.MaxReceiveBufferPerConnection = int(max(w.Conn-h2InitialWindow, h2InitialWindow))
		}
		if ct, err := http2.ConfigureTransports(carrier); err == nil {
			t = ct // else (none: carrier is new) x/net's windows
		}
	}
	t.AllowHTTP = true
	t.DisableCompression = true
	t.IdleConnTimeout = c.idleTimeout()
	t.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return c.dialH2(ctx, network, addr)
	}
	return t
}

// Transport returns the round tripper for a request that arrived over
// HTTP/downstreamMajor, and whether it speaks HTTP/1.1.
func (c *Cluster) Transport(downstreamMajor int) (http.RoundTripper, bool) {
	if c.UseDownstream {
		if downstreamMajor == 2 {
			return c.h2Of(), false
		}
		return c.h1, true
	}
	if c.HTTP2 {
		return c.h2Of(), false
	}
	return c.h1, true
}

// h2Of is the cluster's HTTP/2 round tripper: an ORIGINAL_DST cluster's
// sends on each destination's own Transport (origdst.go).
func (c *Cluster) h2Of() http.RoundTripper {
	if c.Type == OriginalDst {
		return origDstH2{c}
	}
	return h2RT{c.h2pool}
}

// dialH2 opens upstream connections for net/http's HTTP/2 Transport with
// connect_timeout. Over TLS it offers ALPN h2 (the HTTP/1.1 fallback's
// dialer, dialFallback, offers http/1.1), as Envoy's pools do; the
// Transport then speaks its protocol over the TLS connection as over a
// plain one.
func (c *Cluster) dialH2(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := c.dial(ctx, addr, tlsctx.ALPNH2)
	if err != nil {
		return nil, err
	}
	return newH2Conn(c, nc), nil // fails whole on a malformed response (h2conn.go)
}

func (c *Cluster) dial(ctx context.Context, addr string, alpn tlsctx.ALPN) (net.Conn, error) {
	h, _ := ctx.Value(hostKey{}).(*Host)
	// The dial may outlive the request that started it (Go's pool hands the
	// connection to whoever needs one next), so it is not cancelled with
	// the request; connect_timeout bounds it.
	return c.connect(context.WithoutCancel(ctx), h, addr, alpn)
}

// connect opens a TCP connection to addr for host h (nil when unknown),
// and its TLS session when the cluster has a transport socket, within
// connect_timeout, keeping the cluster's and host's connection stats. A
// connect that ctx cancels is not a connect failure.
func (c *Cluster) connect(ctx context.Context, h *Host, addr string, alpn tlsctx.ALPN) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
	defer cancel()
	c.Stats.CxTotal.Inc()
	var d net.Dialer
	t0 := time.Now()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.Stats.CxConnectFail.Inc()
		c.HostConnectFailed(h)
		timeout := timedOut(err)
		if timeout {
			c.Stats.CxConnectTimeout.Inc()
		}
		return nil, &ConnectError{Addr: addr, Timeout: timeout, Err: err}
	}
	// Go sets TCP_NODELAY on every TCP connection already.
	cc := &countedConn{Conn: conn, cx: c.CxOpened(h, t0)}
	if c.TLS == nil {
		return cc, nil
	}
	tc, err := c.TLS.Handshake(dctx, cc, alpn)
	if err != nil {
		_ = cc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// As in Envoy, a connection that fails its handshake never
		// connected; one that connect_timeout ended counts as a connect
		// timeout too, as Envoy's connect timer runs until the handshake
		// is done.
		c.Stats.CxConnectFail.Inc()
		c.HostConnectFailed(h)
		timeout := timedOut(err)
		if timeout {
			c.Stats.CxConnectTimeout.Inc()
		}
		return nil, &ConnectError{Addr: addr, Timeout: timeout, Err: err}
	}
	return tc, nil
}

// HostConnectFailed counts a failed connect to host h (nil when unknown)
// in its cx_connect_fail (/clusters): a TCP connect that failed or timed
// out, or a TLS handshake that failed, as Envoy's pool charges its
// host's stats with each connect failure it charges to its cluster's
// upstream_cx_connect_fail. Both request paths count with it: connect,
// and the loops through their Observer (which count the cluster's
// counter themselves).
func (c *Cluster) HostConnectFailed(h *Host) {
	if h != nil {
		h.cxFail.Add(1)
	}
}

// timedOut reports whether a connect or handshake failed for its
// deadline (connect_timeout): the dialer says so with the context's
// error, or with the poller's when the socket's write deadline (the
// context's) fires first, whichever it sees first.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}

// DialTCP opens a raw upstream connection for tcp_proxy.
func (c *Cluster) DialTCP(ctx context.Context, h *Host) (net.Conn, error) {
	if n := c.cxActive.Load(); n >= int64(c.cb.maxConnections) {
		c.Stats.CxOverflow.Inc()
		return nil, ErrOverflow
	}
	return c.connect(context.WithoutCancel(ctx), h, h.Addr, tlsctx.ALPNConfigured)
}

// Cx is one upstream connection's share of its cluster's and host's
// connection statistics, from its TCP connect to its close: the
// cluster's upstream_cx_active (and the circuit breakers' count of open
// connections), upstream_cx_connect_ms and upstream_cx_length_ms, the
// host's cx_active and cx_total. Both request paths count their
// connections with it (the goroutine path's countedConn, the loops'
// through their Observer), so they add into the same numbers.
type Cx struct {
	c     *Cluster
	h     *Host
	once  sync.Once
	start time.Time
}

// CxOpened counts a connection to host h (nil when unknown) whose TCP
// connect, started at start, is done: over TLS before its handshake,
// which Envoy's pool does not count as a connect either (a connection
// that fails it is closed, and Closed uncounts it).
func (c *Cluster) CxOpened(h *Host, start time.Time) *Cx {
	c.cxActive.Add(1)
	c.Stats.CxActive.Inc()
	if h != nil {
		h.cxActive.Add(1)
		h.cxTotal.Add(1)
	}
	c.Stats.CxConnectMs.Record(uint64(time.Since(start).Milliseconds()))
	return &Cx{c: c, h: h, start: start}
}

// Closed uncounts the connection, once however often it is called.
func (x *Cx) Closed() {
	x.once.Do(func() {
		x.c.Stats.CxLengthMs.Record(uint64(time.Since(x.start).Milliseconds()))
		x.c.cxActive.Add(-1)
		x.c.Stats.CxActive.Dec()
		if x.h != nil {
			x.h.cxActive.Add(-1)
		}
	})
}

type countedConn struct {
	net.Conn
	cx *Cx
}

func (cc *countedConn) Close() error {
	cc.cx.Closed()
	return cc.Conn.Close()
}

// SyscallConn exposes the socket, for the idle-connection check.
func (cc *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := cc.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite half-closes, for tcp_proxy.
func (cc *countedConn) CloseWrite() error {
	if cw, ok := cc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// RequestDone records the outcome of one request to h: code is the
// upstream status, or 0 when the request failed without a response;
// gatewayFailure marks connect failures, resets and timeouts. It feeds
// outlier detection. An HTTP response head is ResponseHead's.
func (c *Cluster) RequestDone(h *Host, code int, gatewayFailure bool, timedOut bool) {
	h.rqActive.Add(-1)
	if timedOut {
		h.rqTimeout.Add(1)
	}
	if code >= 500 || code == 0 {
		h.rqError.Add(1)
	} else {
		h.rqSuccess.Add(1)
	}
	if c.outlier != nil {
		c.outlierRecord(h, code, gatewayFailure)
	}
}

// ResponseHead records a response head r from h, which ends the attempt
// for least-request and rq_active, as Envoy's router takes it
// (Filter::onUpstreamHeaders): outlier detection sees its status, or,
// when a gRPC request's head has a grpc-status, the HTTP status that
// maps to (route.HTTPStatusForGRPC: UNAVAILABLE is a 503). The host
// counts rq_error for an attempt retried, whatever its status, and for a
// 5xx (chargeUpstreamCode); rq_success for any other response to a
// request that is not gRPC. A gRPC response that its head ends counts by
// the head's grpc-status as GRPCDone does; one that goes on leaves the
// count to its end (handleNon5xxResponseHeaders, grpcRqSuccessDeferred):
// ResponseHead returns true, and the caller calls h.GRPCDone when the
// response ends or the upstream breaks it (not when the client or a
// timeout does: Envoy's router counts nothing then).
func (c *Cluster) ResponseHead(h *Host, r route.ResponseHead) (wait bool) {
	h.rqActive.Add(-1)
	code := r.Status
	if r.GRPC && r.GRPCStatus != route.NoGRPCStatus {
		code = route.HTTPStatusForGRPC(r.GRPCStatus)
	}
	if c.outlier != nil {
		c.outlierRecord(h, code, false)
	}
	switch {
	case r.Retried || r.Status >= 500:
		h.rqError.Add(1)
	case !r.GRPC:
		h.rqSuccess.Add(1)
	case r.End:
		h.GRPCDone(r.GRPCStatus)
	default:
		return true
	}
	return false
}

// GRPCDone counts the end of a gRPC response whose count its head left
// to it (Cluster.ResponseHead) in h's rq_success when status, the
// grpc-status of its trailers (route.GRPCStatus), maps below 500, else
// in rq_error: route.NoGRPCStatus for trailers without one, a response
// ended without trailers, or one the upstream reset, as Envoy's router
// counts them (Filter::onUpstreamTrailers, onUpstreamData,
// chargeUpstreamAbort). Outlier detection does not see the trailers.
func (h *Host) GRPCDone(status int) {
	if status != route.NoGRPCStatus && route.HTTPStatusForGRPC(status) < 500 {
		h.rqSuccess.Add(1)
	} else {
		h.rqError.Add(1)
	}
}

// ResponseCut records that a response from h whose head ResponseHead
// recorded was cut before its end: timedOut, by the route timeout, which
// counts the host's rq_timeout as Envoy's router counts it for every
// upstream request in flight, its head seen or not
// (Filter::onResponseTimeout), and nothing for outlier detection; else
// by the upstream (its stream's reset, its connection's end or its
// protocol error), which Envoy's router gives outlier detection as a
// local-origin connect failure on every reset, after the head too
// (Filter::onUpstreamReset): a 503 when local and external errors are
// not split (DetectorHostMonitorImpl::putResultNoLocalExternalSplit),
// so it counts after the head's own status (a 200 head's having reset
// the consecutive counts).
func (c *Cluster) ResponseCut(h *Host, timedOut bool) {
	switch {
	case timedOut:
		h.rqTimeout.Add(1)
	case c.outlier != nil:
		c.outlierRecord(h, http.StatusServiceUnavailable, true)
	}
}

// HeadEnded reports whether the head of a response from the cluster's
// transports ended it: the HTTP/1.1 client's bodyless response
// (http.NoBody), x/net's HEADERS with END_STREAM, which it gives a
// length of 0 without a content-length field. (One with a
// content-length of 0 cannot be told from a body that ends at once.)
func HeadEnded(resp *http.Response) bool {
	if resp.Body == http.NoBody {
		return true
	}
	if resp.ContentLength != 0 {
		return false
	}
	_, ok := resp.Header["Content-Length"]
	return !ok
}

// RequestReset records the end of a request to h that the downstream
// side broke (a client gone or a malformed request body): the host is
// not at fault, so outlier detection does not see it. The request's
// reset is counted in upstream_rq_tx_reset over HTTP/2 (multiplexed),
// as Envoy's HTTP/2 pool counts a local reset
// (MultiplexedActiveClientBase::onStreamReset); its HTTP/1.1 pool counts
// none, closing the connection.
func (c *Cluster) RequestReset(h *Host, multiplexed bool) {
	h.rqActive.Add(-1)
	if multiplexed {
		c.Stats.RqTxReset.Inc()
	}
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
