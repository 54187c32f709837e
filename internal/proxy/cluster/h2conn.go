package cluster

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// An HTTP/2 upstream that sends a malformed response (an invalid field,
// a malformed :status, a 1xx ending its stream, DATA before the
// response's HEADERS or after its end) fails the whole
// connection in Envoy, not only the stream: with
// stream_error_on_invalid_http_messaging unset, as App Mesh leaves it,
// the codec fails on any invalid frame but a refused stream
// (ConnectionImpl::onInvalidFrame in source/common/http/http2/
// codec_impl.cc), the codec client counts upstream_cx_protocol_error
// and closes the connection (CodecClient::onData), and every stream on
// it is reset with reason protocol error (CodecClient::onEvent), each
// counted in upstream_rq_tx_reset (MultiplexedActiveClientBase::
// onStreamReset in source/common/http/conn_pool_base.cc).
//
// x/net's client resets only the stream, with RST_STREAM PROTOCOL_ERROR,
// a code it sends for nothing else (a stream error it raised itself for
// what it read; those the upstream sent are not echoed, and its other
// resets are CANCEL, NO_ERROR or FLOW_CONTROL_ERROR). h2Conn, under the client, watches the
// frames it writes for that reset and fails the connection instead: the
// reset is not sent (Envoy closes without flushing), the connection is
// closed and counted, and x/net's reader, whose read then fails with
// ErrConnProtocol, ends every other stream on it with that error, which
// the caller answers as the upstream's protocol error (IsProtocolError).

// ErrConnProtocol is the error of a stream whose HTTP/2 connection
// failed for the upstream's protocol error on another stream.
var ErrConnProtocol = &ProtocolError{Err: errors.New("the HTTP/2 connection failed: the upstream broke the protocol")}

// h2Conn is an HTTP/2 upstream connection as x/net's client uses it.
type h2Conn struct {
	net.Conn
	c      *Cluster
	failed atomic.Bool

	// The frames written so far, as the writer (x/net's client, one
	// write at a time under its write lock) left them: preface bytes
	// still to pass, the frame header being read, payload bytes left of
	// the frame, and, for an RST_STREAM, its error code.
	preface int
	hdr     [9]byte
	nhdr    int
	left    int
	rst     bool
	code    [4]byte
	ncode   int
}

func newH2Conn(c *Cluster, nc net.Conn) *h2Conn {
	return &h2Conn{Conn: nc, c: c, preface: len(http2.ClientPreface)}
}

func (w *h2Conn) Write(p []byte) (int, error) {
	if w.failed.Load() {
		return 0, ErrConnProtocol
	}
	if w.protocolReset(p) {
		w.fail()
		return len(p), nil
	}
	return w.Conn.Write(p)
}

func (w *h2Conn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil && w.failed.Load() {
		return n, ErrConnProtocol
	}
	return n, err
}

// Close closes the connection as x/net's client closes a *tls.Conn it
// holds itself (forceCloseConn), which it cannot tell under h2Conn: a
// TLS close_notify to a peer that reads nothing may wait crypto/tls's
// 5 s write deadline, so the socket under it is closed after 250 ms.
func (w *h2Conn) Close() error {
	if tc, ok := w.Conn.(*tls.Conn); ok {
		// Ends after 250 ms, or stopped once the close returns.
		t := time.AfterFunc(250*time.Millisecond, func() { _ = tc.NetConn().Close() })
		defer t.Stop()
	}
	return w.Conn.Close()
}

// fail closes the connection for the upstream's protocol error, once, and
// sends the upstream nothing (no close_notify under TLS): Envoy closes it
// without flushing (CodecClient::close after the failed dispatch), and
// fail runs inside Write, under x/net's write lock, which a TLS close's
// write to a peer that reads nothing would hold for seconds.
func (w *h2Conn) fail() {
	if w.failed.Swap(true) {
		return
	}
	w.c.Stats.CxProtocolError.Inc()
	raw := w.Conn
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	_ = raw.Close()
}

// protocolReset reads p, the next bytes written, and reports whether an
// RST_STREAM PROTOCOL_ERROR ends in them.
func (w *h2Conn) protocolReset(p []byte) bool {
	for len(p) > 0 {
		switch {
		case w.preface > 0:
			n := min(w.preface, len(p))
			w.preface -= n
			p = p[n:]
		case w.nhdr < len(w.hdr):
			n := copy(w.hdr[w.nhdr:], p)
			w.nhdr += n
			p = p[n:]
			if w.nhdr == len(w.hdr) {
				w.left = int(w.hdr[0])<<16 | int(w.hdr[1])<<8 | int(w.hdr[2])
				w.rst = http2.FrameType(w.hdr[3]) == http2.FrameRSTStream && w.left == len(w.code)
				w.ncode = 0
				if w.left == 0 {
					w.nhdr = 0
				}
			}
		default:
			n := min(w.left, len(p))
			if w.rst {
				w.ncode += copy(w.code[w.ncode:], p[:n])
			}
			w.left -= n
			p = p[n:]
			if w.left == 0 {
				w.nhdr = 0
				if w.rst && http2.ErrCode(binary.BigEndian.Uint32(w.code[:])) == http2.ErrCodeProtocol {
					return true
				}
			}
		}
	}
	return false
}
