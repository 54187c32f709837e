package cluster

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/route"
)

// ProtocolError is an upstream's response the proxy cannot take: a head
// over route.MaxHeadBytes, a status or header line that does not parse, a
// 101 to a request that asked no upgrade, an HTTP/2 1xx ending its
// stream. It is answered as route.UpstreamProtocolError*.
type ProtocolError struct{ Err error }

func (e *ProtocolError) Error() string { return "upstream protocol error: " + e.Err.Error() }

func (e *ProtocolError) Unwrap() error { return e.Err }

var errHeadTooLarge = errors.New("response head over the size limit")

// IsProtocolError reports whether err, from a round trip or a response
// body, is the upstream's protocol error: a ProtocolError (ErrConnProtocol
// included), net/http's Transport's refusal of a head over
// MaxResponseHeaderBytes or of one it cannot parse, or an HTTP/2 error
// the client raised itself for what the upstream sent (H2ProtocolReset).
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	if errors.As(err, &pe) || H2ProtocolReset(err) {
		return true
	}
	m := err.Error()
	return strings.Contains(m, "server response headers exceeded") || strings.Contains(m, "malformed HTTP")
}

// H2ProtocolReset reports whether err ended an HTTP/2 stream that the
// proxy's codec reset for the upstream's protocol error: a stream error
// x/net raised for a malformed response (not a reset the upstream sent,
// RemoteReset), a connection error it raised, or ErrConnProtocol. Envoy
// counts such a stream in upstream_rq_tx_reset (h2conn.go).
func H2ProtocolReset(err error) bool {
	if errors.Is(err, ErrConnProtocol) {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeProtocol && !fromPeer(se)
	}
	var ce http2.ConnectionError
	return errors.As(err, &ce)
}

// RemoteReset reports whether err is an HTTP/2 upstream's RST_STREAM,
// Envoy's reset reason "remote reset"; REFUSED_STREAM too, which callers
// tell apart by asking Refused first.
func RemoteReset(err error) bool {
	var se http2.StreamError
	return errors.As(err, &se) && fromPeer(se)
}

// H2StreamReset reports whether err is an HTTP/2 stream's reset that
// Envoy's HTTP/2 pool counts in upstream_rq_rx_reset: its reset reason
// remote reset, which is the upstream's RST_STREAM and its codec's own
// resets but for a protocol error (ConnectionImpl::onStreamClose), and
// not a refused stream (MultiplexedActiveClientBase::onStreamReset).
func H2StreamReset(err error) bool {
	var se http2.StreamError
	return errors.As(err, &se) && se.Code != http2.ErrCodeRefusedStream && !H2ProtocolReset(err) || PassedLength(err)
}

// fromPeer: x/net marks a stream error it read in a RST_STREAM with an
// unexported cause whose text is this.
func fromPeer(se http2.StreamError) bool {
	return se.Cause != nil && se.Cause.Error() == "received from peer"
}

// headLimit sits under an upstream connection's bufio.Reader and bounds
// what is read for one response head: armed with the bytes the reader
// already holds, it gives at most route.MaxHeadBytes from the head's
// start and then errHeadTooLarge, so that a head ending within the limit
// is always read whole and one passing it fails. Disarmed (left < 0), it
// passes reads through.
type headLimit struct {
	r    io.Reader
	left int
}

func (h *headLimit) Read(p []byte) (int, error) {
	if h.left < 0 {
		return h.r.Read(p)
	}
	if h.left == 0 {
		return 0, errHeadTooLarge
	}
	if len(p) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.left -= n
	return n, err
}

// arm starts a head that buffered bytes of are already read.
func (h *headLimit) arm(buffered int) { h.left = max(route.MaxHeadBytes-buffered, 0) }

func (h *headLimit) disarm() { h.left = -1 }

// readFailure reports whether err from http.ReadResponse is the
// connection's (closed, reset, timed out) rather than the head's.
func readFailure(err error) bool {
	var ne net.Error
	var errno syscall.Errno
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne) || errors.As(err, &errno)
}

// badHead reports whether err, reading a response head whose first byte
// came, is the upstream's protocol error: a head that does not parse, or
// one the connection's end cuts, by the upstream's close (an EOF, which
// net/http's reader reports unexpected in a head) or a socket error such
// as its reset; not a deadline or the proxy's own close. Envoy's codec
// client hands the parser the end of input at the close
// (CodecClient::onEvent), which fails it there as HPE_INVALID_EOF_STATE
// (Balsa and http_parser alike).
func badHead(err error) bool {
	return !readFailure(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || connEnd(err)
}

// untilClose reports whether resp's body, as net/http framed it, is
// delimited by its connection's end: no Content-Length, not chunked, not
// a 101's connection, not a bodyless response.
func untilClose(resp *http.Response) bool {
	return resp.ContentLength < 0 && resp.TransferEncoding == nil && resp.StatusCode != http.StatusSwitchingProtocols &&
		resp.Body != http.NoBody
}

// connEnd reports whether err, reading a body delimited by its
// connection's end, is that end, as its close (io.EOF) is: a socket
// error such as the upstream's reset, not a deadline or the proxy's own
// close. Envoy's connection raises a read error as the remote close, at
// which its codec client hands the codec the end of input
// (CodecClient::onEvent), which ends such a body whole (Balsa's and
// http_parser's end of a body without a length).
func connEnd(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno)
}

// untilCloseBody is the fallback transport's body delimited by its
// connection's end, which a reset ends as the close does (connEnd).
type untilCloseBody struct{ io.ReadCloser }

func (b untilCloseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && connEnd(err) {
		err = io.EOF
	}
	return n, err
}
