package httpconn

// An upgraded (101) connection: the head goes downstream, then bytes are
// relayed both ways until one side ends, and how it ended is logged as
// Envoy's connection manager logs the upgraded stream's reset.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// switchProtocols completes an upgrade the upstream accepted (101): the
// head goes downstream, then bytes are copied both ways until either side
// ends, which ends both (upgradeEnded): no half-close, as Envoy's
// connection manager and codec client enable none.
func (m *HCM) switchProtocols(w http.ResponseWriter, s *stream, out *http.Request, res *http.Response) {
	reqType, resType := upgradeType(out.Header), upgradeType(res.Header)
	if !printable(resType) {
		m.errorHandler(w, s, fmt.Errorf("backend tried to switch to invalid protocol %q", resType))
		return
	}
	if !strings.EqualFold(reqType, resType) {
		m.errorHandler(w, s, fmt.Errorf("backend tried to switch protocol %q when %q was requested", resType, reqType))
		return
	}
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		m.errorHandler(w, s, errors.New("101 switching protocols response with non-writable body"))
		return
	}
	defer back.Close()
	// The stream's end (a timeout, shutdown) closes the upstream side.
	stop := context.AfterFunc(s.ctx, func() { _ = back.Close() })
	defer stop()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		m.errorHandler(w, s, fmt.Errorf("hijack on protocol switch: %w", err))
		return
	}
	defer conn.Close()
	addHeaders(w.Header(), res.Header)
	res.Header = w.Header()
	res.Body = nil                       // the head only
	s.details = route.DetailsViaUpstream // a 101 too (Filter::onUpstreamHeaders)
	if err := res.Write(brw); err != nil {
		m.errorHandler(w, s, fmt.Errorf("response write: %w", err))
		return
	}
	if err := brw.Flush(); err != nil {
		m.errorHandler(w, s, fmt.Errorf("response flush: %w", err))
		return
	}
	// The head went out past the response writer (hijacked): its status
	// is the stream's response code all the same, as Envoy's connection
	// manager takes it from the head it encodes, a 101 too.
	s.rw.code, s.rw.first = res.StatusCode, time.Now()
	ends := make(chan bool, 2) // by the upstream's side (relay)
	// The bytes relayed are the stream's body bytes both ways, as
	// Envoy's connection manager counts an upgraded stream's data
	// (%BYTES_RECEIVED%, %BYTES_SENT%), and the client's keep the stream
	// from its idle timeout as the upstream's do (upstreamBody.Read), as
	// its decodeData resets the idle timer.
	var sent atomic.Int64
	received := func(n int) {
		s.rxBytes.Add(int64(n))
		s.touch()
	}
	// Both copies end when their source ends or fails or their
	// destination fails; the second at the latest when both connections
	// are closed below.
	go func() { ends <- relay(conn, back, true, func(n int) { sent.Add(int64(n)) }) }()
	go func() { ends <- relay(back, conn, false, received) }()
	ub, _ := back.(*upgradedBody) // always, but for a test's transport
	byUpstream := <-ends
	m.upgradeEnded(s, ub, byUpstream)
	if byUpstream && context.Cause(s.ctx) == nil {
		lingerUpgraded(conn, back, ends)
	} else {
		_ = conn.Close()
		_ = back.Close()
		<-ends
	}
	s.rw.bytes += sent.Load() // both copies ended: the head's writer is done too
}

// lingerUpgraded ends an upgraded connection the upstream ended, all of
// whose bytes went to the client: the client gets a FIN after them, and
// what it still sends is read and dropped for up to route.DrainFor (its
// copy to the closed upstream fails at its first bytes), as h1Conn.linger
// does, so that closing with its bytes unread does not reset the
// connection and lose the upstream's last bytes on their way (a
// WebSocket's closing frames while the client was sending). Envoy closes
// such a connection once its buffer is written (FlushWrite), with the
// same loss; the client sees the same end, sooner. Unlike linger it
// reads without maxDrain's cap: a client still streaming passes 256 KiB
// in a few milliseconds, before it read what was sent, and the time
// alone bounds the work. ends gives the client's copy's end.
func lingerUpgraded(conn net.Conn, back io.Closer, ends <-chan bool) {
	_ = back.Close()
	if !halfClose(conn) {
		_ = conn.Close()
		<-ends
		return
	}
	<-ends // at the deadline, or its write to the closed upstream failed
	_, _ = io.Copy(io.Discard, conn)
	_ = conn.Close()
}

// relay copies src to dst until src ends or fails or a write to dst
// fails, and reports whether the upstream's side ended the copy:
// fromUpstream says that src is the upstream's side. read is told of
// every read that gave bytes.
func relay(dst io.Writer, src io.Reader, fromUpstream bool, read func(n int)) (byUpstream bool) {
	buf := bufPool.Get()
	defer bufPool.Put(buf)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			read(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return !fromUpstream
			}
		}
		if rerr != nil {
			return fromUpstream
		}
	}
}

// upgradeEnded records how an upgraded connection ended, once one side
// ended it (byUpstream says which), before both are closed: as the first
// end of either side, a FIN or a failure alike, ends Envoy's upgraded
// stream, which is reset then, whichever side ended it
// (ActiveStream::onResetStream counts downstream_rq_rx_reset).
//
//   - The upstream's: Envoy enables no half-close on an upstream HTTP
//     connection, so its FIN closes it as a reset does; the codec client,
//     whose upgraded codec passes bytes through unparsed
//     (ConnectionImpl::maybeDirectDispatch), resets the stream
//     ConnectionTermination (CodecClient::onEvent), which the router logs
//     as a cut response (UC, route.DetailsCutConnectionTermination) and
//     gives outlier detection (Filter::onUpstreamReset; cutHost).
//   - The client's: the connection manager resets the stream on its
//     connection's RemoteClose (resetAllStreams) and logs it DC,
//     downstream_remote_disconnect (ActiveStream::completeRequest); the
//     router resets its upstream request with its callbacks removed, not
//     seen by outlier detection.
//   - A timer or shutdown that ended the stream closed the upstream's
//     side (switchProtocols): upstreamBody.Read recorded it.
func (m *HCM) upgradeEnded(s *stream, back *upgradedBody, byUpstream bool) {
	m.stats.rqRxReset.Inc()
	switch {
	case context.Cause(s.ctx) != nil:
	case byUpstream:
		s.bodyFlags.Or(uint32(accesslog.UpstreamConnectionTermination))
		s.bodyCut.CompareAndSwap(nil, &cutConnectionTermination)
		if back != nil {
			back.cutHost(false)
		}
	default:
		s.flags |= accesslog.DownstreamConnectionTermination
		s.details = route.DetailsRemoteDisconnect
	}
}
