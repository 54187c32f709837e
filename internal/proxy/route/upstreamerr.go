package route

import "strings"

// The local reply to a request whose upstream sent a response head its
// codec could not take, one rule for both request paths: a head over
// MaxHeadBytes (Envoy's cluster max_response_headers_kb default, which
// App Mesh does not set), a status line or header line it cannot read, a
// 101 to a request that asked no upgrade, an HTTP/2 1xx ending its
// stream. Envoy's codec client then closes the connection as a protocol
// error (CodecClient::onData, onEvent in source/common/http/
// codec_client.cc) and resets the stream with reason ProtocolError; the
// router answers that reset 502 where it answers any other 503
// (Filter::onUpstreamReset in source/common/router/router.cc: since Envoy
// 1.18, under the runtime guard return_502_for_upstream_protocol_errors,
// on by default, whose removal in 1.21 left 502 alone, so every Envoy App
// Mesh shipped answers 502), with this body, the details ResetDetails gives
// UpstreamProtocolErrorReason, flagged UPE (accesslog.UpstreamProtocolError).
const (
	UpstreamProtocolErrorStatus = 502
	UpstreamProtocolErrorBody   = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	UpstreamProtocolErrorReason = "protocol_error" // as ResetDetails writes it
)

// DetailsViaUpstream is the response code details of a request whose
// final response head came from its upstream, one rule for every request
// path: Envoy's router sets it as it takes a final head it does not
// retry, a 101 too (Filter::onUpstreamHeaders), and not for a 1xx it
// takes (Filter::onUpstream1xxHeaders). What cuts the response later
// replaces it: a route timeout's upstream_response_timeout, a reset's
// DetailsCut* (the router's sendLocalReply, which can only reset the
// stream by then, sets its details all the same).
const DetailsViaUpstream = "via_upstream"

// Reset reasons as Envoy's details write them
// (Http::Utility::resetReasonToString).
const (
	ResetConnectionTermination   = "connection_termination"
	ResetRemoteReset             = "remote_reset"
	ResetRemoteRefused           = "remote_refused_stream_reset"
	ResetRemoteConnectionFailure = "remote_connection_failure"
	ResetLocalConnectionFailure  = "local_connection_failure"
	ResetConnectionTimeout       = "connection_timeout"
)

// ResetBody is the body of the local reply to an upstream reset before
// the response head, whose reason is why (ConnectFailure.Body adds a
// transport failure reason), of a request's first attempt (RetriedBody
// words a later one's): the router's Filter::onUpstreamReset.
func ResetBody(why string) string {
	return resetLead + resetReason + why
}

const (
	resetLead   = "upstream connect error or disconnect/reset before headers. "
	resetReason = "reset reason: "
)

// RetriedBody is body, a local reply's, as the reply to a request's
// attempt number attempts (1: the first) words it, one rule for every
// request path: the body of a reset before the response head (ResetBody,
// ConnectFailure.Body, UpstreamProtocolErrorBody; the overflow's too)
// says "retried and the latest reset reason: " in place of "reset reason:
// " once the request was retried; any other body, and a first attempt's,
// is body. Envoy's router (Filter::onUpstreamReset) adds the words when
// its is_retry_ is set, which only Filter::doRetry sets, as it starts
// the attempt after the first (and counts it in attempt_count_, the
// access log's %UPSTREAM_REQUEST_ATTEMPT_COUNT%). Its details
// (ResetDetails) do not change. Allocates only for a retried request's
// reset.
func RetriedBody(body string, attempts int) string {
	if attempts <= 1 {
		return body
	}
	if why, ok := strings.CutPrefix(body, resetLead+resetReason); ok {
		return resetLead + "retried and the latest " + resetReason + why
	}
	return body
}

// The response code details of a response its upstream reset after its
// head went downstream, one rule for every request path: Envoy's router
// logs upstream_reset_after_response_started{reason}
// (Filter::onUpstreamReset, ResetDetails) with the reason's flag
// (streamResetReasonToResponseFlag), and keeps the status the head went
// down with. The reason is the upstream codec's:
//
//   - an HTTP/1.1 upstream that closes (or resets) its connection before
//     the body's end, or sends a malformed chunk: protocol_error, UPE.
//     On the close its codec client dispatches the end of input
//     (CodecClient::onEvent), which the parser, in a body of known length
//     or chunked, fails as HPE_INVALID_EOF_STATE (BalsaParser::execute,
//     http_parser's execute of 0 bytes), a codec protocol error
//     (CodecClient::onData sets protocol_error_), so the streams are
//     reset ProtocolError rather than ConnectionTermination;
//   - an HTTP/2 upstream's RST_STREAM, and its codec's own stream resets
//     but for a protocol error (ConnectionImpl::onStreamClose):
//     remote_reset, UR; REFUSED_STREAM: remote_refused_stream_reset, UR;
//   - an HTTP/2 connection that closes, and an upgraded (HTTP/1.1)
//     connection that fails, whose bytes the codec no longer parses:
//     connection_termination, UC;
//   - an HTTP/2 connection failed for the upstream's protocol error:
//     protocol_error, UPE.
//
// Constants, so that the event loops write them without allocating.
const (
	DetailsCutProtocolError         = "upstream_reset_after_response_started{" + UpstreamProtocolErrorReason + "}"
	DetailsCutRemoteReset           = "upstream_reset_after_response_started{" + ResetRemoteReset + "}"
	DetailsCutRemoteRefused         = "upstream_reset_after_response_started{" + ResetRemoteRefused + "}"
	DetailsCutConnectionTermination = "upstream_reset_after_response_started{" + ResetConnectionTermination + "}"
)

// DetailsRouteTimeout is the response code details of a request the
// route timeout ended, before its response head or after it (Envoy's
// ResponseCodeDetails ResponseTimeout).
const DetailsRouteTimeout = "upstream_response_timeout"

// The response code details of a request the stream idle timeout (the
// route's idle_timeout or the connection manager's stream_idle_timeout)
// or the max stream duration ended, before its response head or after
// it: Envoy's connection manager sets them as it ends the stream
// (ActiveStream::onIdleTimeout, onStreamMaxDurationReached, whose
// sendLocalReply, once the head went down, resets the stream and sets
// them all the same).
const (
	DetailsStreamIdleTimeout  = "stream_idle_timeout"
	DetailsMaxDurationTimeout = "max_duration_timeout"
)

// ResetDetails is the response code details of the local reply to an
// upstream reset of reason (as the details write it:
// UpstreamProtocolErrorReason, Reset*; ConnectFailure.Details adds a
// transport failure reason), one rule for both
// request paths: Envoy's router (Filter::onUpstreamReset) says
// upstream_reset_before_response_started{reason}, or, once the response
// started, upstream_reset_after_response_started{reason}. A reset that
// gets a local reply comes before the final response head, so started
// means that a 1xx came which the router took (Special1xx:
// Filter::onUpstream1xxHeaders sets downstream_response_started_).
func ResetDetails(reason string, started bool) string {
	if started {
		switch reason {
		case UpstreamProtocolErrorReason:
			return DetailsCutProtocolError
		case ResetRemoteReset:
			return DetailsCutRemoteReset
		case ResetRemoteRefused:
			return DetailsCutRemoteRefused
		case ResetConnectionTermination:
			return DetailsCutConnectionTermination
		}
		return "upstream_reset_after_response_started{" + reason + "}"
	}
	return "upstream_reset_before_response_started{" + reason + "}"
}
