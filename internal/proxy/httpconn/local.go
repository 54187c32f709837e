package httpconn

// Local replies: what the connection manager answers itself, as Envoy's
// (its bodies, flags and details; a gRPC request's as a gRPC status), for
// a request it does not route, or whose upstream exchange failed before a
// response.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// localError is what the upstream round tripper returns instead of a
// response: the local reply Envoy would send.
type localError struct {
	code    int
	flags   accesslog.Flags
	body    string
	details string
	// upstreamFailure is the transport failure reason of a connection
	// that failed before it was up (route.ConnectFailure.Transport): Envoy's
	// UpstreamRequest::onPoolFailure stores it in the attempt's upstream
	// info, which the stream's access log reads, whether or not a reply goes.
	upstreamFailure string
	abort           bool // no reply: reset the stream (close the HTTP/1.1 connection)
	close           bool // close the HTTP/1.1 connection after the reply
	// grpc is the grpc-status of the reply to a gRPC request; 0: the one
	// its code maps to (route.GRPCStatusFor).
	grpc int
}

func (e *localError) Error() string { return e.body }

// errorHandler answers a stream whose upstream exchange failed before a
// response: with the local reply err describes, or none.
func (m *HCM) errorHandler(w http.ResponseWriter, s *stream, err error) {
	var le *localError
	if !errors.As(err, &le) {
		le = &localError{code: http.StatusServiceUnavailable, flags: accesslog.UpstreamConnectionTermination,
			body: "upstream connect error or disconnect/reset before headers. reset reason: connection termination"}
	}
	s.upstreamFailure = le.upstreamFailure
	if s.down.Err() != nil {
		// The client went away: nothing to answer.
		s.flags |= accesslog.DownstreamConnectionTermination | le.flags
		s.clientLeft()
		return
	}
	if le.abort {
		s.flags |= le.flags
		s.details = le.details
		panic(http.ErrAbortHandler)
	}
	if le.close && s.in.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	// A reset's body says whether the request was retried, as the loops
	// say it (abortReply).
	m.localReplyGRPC(w, s, le.code, le.grpc, le.flags, route.RetriedBody(le.body, s.attempts), le.details)
}

// localReply answers without an upstream response, as gRPC (trailers
// only, grpc-status) when the request is gRPC.
func (m *HCM) localReply(w http.ResponseWriter, s *stream, code int, flags accesslog.Flags, body, details string) {
	m.localReplyGRPC(w, s, code, 0, flags, body, details)
}

// localReplyGRPC is localReply with the grpc-status of its reply to a
// gRPC request; 0: the one code maps to (route.GRPCStatusFor).
func (m *HCM) localReplyGRPC(w http.ResponseWriter, s *stream, code, grpcStatus int, flags accesslog.Flags, body, details string) {
	s.flags |= flags
	if details != "" {
		s.details = details
	}
	h := w.Header()
	m.applyResponseHeaders(s, h)
	if s.in.ProtoMajor == 1 && s.replyCloses() {
		h.Set("Connection", "close")
	}
	if route.IsGRPC(s.in.Header.Get("Content-Type")) {
		h.Set("Content-Type", "application/grpc")
		if grpcStatus == 0 {
			grpcStatus = route.GRPCStatusFor(code)
		}
		h.Set("Grpc-Status", strconv.Itoa(grpcStatus))
		if body != "" {
			h.Set("Grpc-Message", body)
		}
		// Headers only, as Envoy sends it: it drops any content-length
		// from a gRPC local reply.
		emptyReply(s, h)
		w.WriteHeader(http.StatusOK)
		return
	}
	if body == "" {
		// No write: the HTTP/1.1 writer then frames the reply as
		// Envoy's codec frames a response without a body or a length,
		// with content-length 0, or to a HEAD request an announced
		// chunked body (a write, even empty, would begin a chunked
		// body).
		emptyReply(s, h)
		w.WriteHeader(code)
		return
	}
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// emptyReply readies h, a local reply's header map, for a reply without
// a body: Envoy sets content-length only for a body
// (Utility::prepareLocalReply), and its HTTP/2 codec adds none to a head
// that ends the stream, where its HTTP/1.1 codec adds "0", as the writer
// here does. To an HTTP/2 client the key without a value keeps x/net's
// server from adding "0" for a handler that wrote nothing.
func emptyReply(s *stream, h http.Header) {
	if s.in.ProtoMajor == 2 {
		h["Content-Length"] = nil
	}
}

// detailsProtocolError is the response code details of a request whose
// body broke its framing.
const detailsProtocolError = "downstream_protocol_error"

// clientLeft records a stream whose client left while it waited for the
// upstream, or after its response began (route.DetailsRemoteDisconnect),
// once: counted in
// downstream_rq_rx_reset, with the details of its connection's end, or
// over HTTP/2 of its stream's reset. Its context ends for other causes
// too, recorded as before: shutdown (errShutdown), an HTTP/2 connection
// the proxy closed.
func (s *stream) clientLeft() {
	if s.left {
		return
	}
	s.left = true
	details := ""
	switch cause := context.Cause(s.down); {
	case errors.Is(cause, errShutdown):
	case errors.Is(cause, errClientGone): // the HTTP/1.1 fast path's watch
		details = route.DetailsRemoteDisconnect
	case s.in.ProtoMajor == 2:
		t := resetTrackerFrom(s.down)
		switch {
		case t == nil:
		case t.peerGone.Load():
			details = route.DetailsRemoteDisconnect
		case !t.readEnded.Load():
			// The connection lives on: x/net cancels a stream's context
			// then for the client's RST_STREAM only.
			details = route.DetailsH2RemoteReset
		}
	}
	if details != "" {
		s.details = details
		s.countRxReset()
	}
}

// countRxReset counts the stream in downstream_rq_rx_reset, once: a
// client that resets an HTTP/2 stream while its body is read fails the
// body's read (downstreamError) and ends the stream's context
// (clientLeft), and Envoy counts the reset once (onResetStream).
func (s *stream) countRxReset() {
	if !s.rxReset {
		s.rxReset = true
		s.m.stats.rqRxReset.Inc()
	}
}

// bodyMalformed reports whether reading the downstream request body
// failed on its framing (bad chunk sizes, a body longer than declared),
// not because the client went away.
func (s *stream) bodyMalformed() bool {
	p := s.bodyErr.Load()
	if p == nil || s.down.Err() != nil {
		return false
	}
	err := *p
	var ne net.Error
	return !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !errors.As(err, &ne)
}

// downstreamError is the local reply for an upstream attempt that failed
// because the downstream request body could not be read, or nil. Such a
// failure is the client's: answered 400 when the body was malformed,
// not at all when the client went away, never retried and never held
// against the upstream host.
func (s *stream) downstreamError() *localError {
	if s.bodyErr.Load() == nil {
		return nil
	}
	if !s.bodyMalformed() {
		s.countRxReset()
		return &localError{abort: true, flags: accesslog.DownstreamConnectionTermination, details: route.DetailsRemoteDisconnect}
	}
	// Malformed framing: Envoy's codec answers 400 and closes the
	// connection (once a response started, upstreamBody.Read).
	s.m.stats.cxProtocolError.Inc()
	return &localError{code: http.StatusBadRequest, flags: accesslog.DownstreamProtocolError, body: "Bad Request",
		details: detailsProtocolError, close: true}
}
