package httpconn

// An upstream response's body as the stream relays it: what its end
// releases, and what its failure after the head went downstream is
// logged as (upstreamBody.Read, cutBy).

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// upstreamBody releases the attempt's circuit-breaker slot and context
// when the response body is done, and keeps the stream active.
type upstreamBody struct {
	io.ReadCloser
	s    *stream
	done func()
	once sync.Once
	wire net.Conn // its HTTP/2 connection (attempt.conn), or nil
	// h2: the response came over HTTP/2; upgraded: it is a 101's
	// connection, whose bytes no codec parses (cutBy).
	h2, upgraded bool
	grpc         *grpcEnd // a gRPC response whose end decides its host's count, or nil
	// host: its head's, told of a cut of the response (cutHost), or nil
	// once told; closed: the proxy closed the body (Close), so that a
	// read it fails is no cut by the upstream (an upgraded connection's,
	// read on a goroutine of its own, when the client's side ended).
	host   *cluster.Host
	closed atomic.Bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if cluster.PassedLength(err) {
		n = 0 // the DATA that passed the length is not relayed (cluster.PassedLength)
	}
	if n > 0 {
		b.s.touch()
	}
	if b.grpc != nil {
		if n > 0 {
			b.grpc.body = true
		}
		if err == io.EOF {
			b.grpcEnded() // the transports have taken the trailers when they say EOF
		}
	}
	if err != nil && err != io.EOF && (!b.upgraded || context.Cause(b.s.ctx) != nil) {
		// The response broke after its headers went downstream: record
		// why. An upgraded connection's end is switchProtocols's to
		// record (upgradeEnded), but for a timer's or shutdown's.
		s := b.s
		first := !s.bodyBroke.Swap(true)
		var f accesslog.Flags
		switch {
		case s.down.Err() != nil:
			f = accesslog.DownstreamConnectionTermination
		case s.in.ProtoMajor == 1 && s.bodyMalformed():
			// The transport gave up the exchange on the client's
			// malformed body (recorded before it did). Envoy's HTTP/1.1
			// codec can send no 400 once a response started: it resets
			// the stream, closing the connection, a protocol error.
			f = accesslog.DownstreamProtocolError
			if first {
				s.m.stats.cxProtocolError.Inc()
			}
		case context.Cause(s.ctx) != nil:
			f = s.ctxError(s.ctx, true).flags
			switch cause := context.Cause(s.ctx); {
			case errors.Is(cause, errRouteTimeout):
				b.cutHost(true)
			case errors.Is(cause, errDuration):
				s.bodyCut.CompareAndSwap(nil, &cutMaxDuration) // no flag tells it (ctxError)
			}
		case cluster.H2ProtocolReset(err):
			// Its HTTP/2 connection failed for the upstream's protocol
			// error (cluster/h2conn.go), counted as classify counts it.
			f = accesslog.UpstreamProtocolError
			if first {
				s.cl.Stats.RqTxReset.Inc()
				cluster.CountConnError(b.wire, err)
			}
			s.bodyCut.CompareAndSwap(nil, &cutProtocolError)
			b.cutHost(false)
			b.grpcDone(route.NoGRPCStatus) // the upstream broke it (Envoy's chargeUpstreamAbort)
		default:
			var cut *string
			f, cut = b.cutBy(err)
			if first && cluster.H2StreamReset(err) {
				s.cl.Stats.RqRxReset.Inc() // as classify counts it
			}
			if first && f == accesslog.UpstreamProtocolError {
				// An HTTP/1.1 upstream's connection, failed by its
				// codec and closed, as classify counts one before the
				// head.
				s.cl.Stats.CxProtocolError.Inc()
			}
			s.bodyCut.CompareAndSwap(nil, cut)
			b.cutHost(false)
			b.grpcDone(route.NoGRPCStatus)
		}
		s.bodyFlags.Or(uint32(f))
	}
	return n, err
}

// writeCut records a route timeout that cut the response as its write
// to the client failed (abortWrites: a client that does not read it)
// as one that cut a read of its body is recorded (UT, counted in
// upstream_rq_timeout, its host told), as Envoy's
// Filter::onResponseTimeout logs it after the head whichever side held
// the stream up. Else, over HTTP/1.1, where the failed write leaves the
// request's context on, it was logged - and via_upstream, uncounted.
// Once; not after a read recorded the body's cut.
func (b *upstreamBody) writeCut() {
	s := b.s
	if s.ctx == nil || !errors.Is(context.Cause(s.ctx), errRouteTimeout) || s.bodyBroke.Swap(true) {
		return
	}
	s.bodyFlags.Or(uint32(s.ctxError(s.ctx, true).flags))
	b.cutHost(true)
}

// cutHost tells the response's host, once, that its response was cut
// after the head (cluster.Cluster.ResponseCut): by the upstream, or,
// timedOut, by the route timeout. Not once the proxy closed the body:
// the read failed for that, as Envoy's router resets its upstream
// request with its callbacks removed (UpstreamRequest::resetStream).
func (b *upstreamBody) cutHost(timedOut bool) {
	if h := b.host; h != nil && (timedOut || !b.closed.Load()) {
		b.host = nil
		b.s.cl.ResponseCut(h, timedOut)
	}
}

// The details an upstream's reset after the head gives (route.DetailsCut*),
// for stream.bodyCut, and the max stream duration's.
var (
	cutProtocolError         = route.DetailsCutProtocolError
	cutRemoteReset           = route.DetailsCutRemoteReset
	cutRemoteRefused         = route.DetailsCutRemoteRefused
	cutConnectionTermination = route.DetailsCutConnectionTermination
	// cutMaxDuration is the max stream duration's, which cuts a response
	// as the connection manager resets its stream.
	cutMaxDuration = route.DetailsMaxDurationTimeout
)

// cutBy is the flag and the details of an upstream response body that
// err, from its upstream, cut after the head went downstream, as Envoy's
// router logs the reset its codec reports then (route.DetailsCut*): an
// HTTP/2 stream's reset, the upstream's or x/net's own (a DATA past the
// content-length, which nghttp2 resets as a remote reset), is a remote
// reset (UR), a refused one (REFUSED_STREAM, or above the last-stream-id
// of the upstream's GOAWAY) a remote refused stream reset (UR); an HTTP/2
// connection that ended, or an upgraded one, a connection termination
// (UC); an HTTP/1.1 body that ended early (its connection closed or
// reset) or broke its framing, the codec's protocol error (UPE).
func (b *upstreamBody) cutBy(err error) (accesslog.Flags, *string) {
	switch {
	case cluster.H2StreamReset(err):
		return accesslog.UpstreamRemoteReset, &cutRemoteReset
	case b.h2 && cluster.Refused(err): // REFUSED_STREAM (H2StreamReset leaves it out), or a GOAWAY's
		return accesslog.UpstreamRemoteReset, &cutRemoteRefused
	case b.h2 || b.upgraded:
		return accesslog.UpstreamConnectionTermination, &cutConnectionTermination
	}
	return accesslog.UpstreamProtocolError, &cutProtocolError
}

// arrived reports whether a read of the body would not wait for the
// upstream, and whether the transport can tell: the HTTP/1.1 client's
// body can (cluster's h1Body), x/net's and net/http's cannot.
func (b *upstreamBody) arrived() (yes, known bool) {
	if a, ok := b.ReadCloser.(interface{ Arrived() bool }); ok {
		return a.Arrived(), true
	}
	return false, false
}

// upgradedBody is the body of a 101 response: the raw connection.
type upgradedBody struct {
	*upstreamBody
	w io.Writer
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.w.Write(p) }

func (b *upstreamBody) Close() error {
	b.closed.Store(true) // before the close that may fail a read (cutHost)
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}
