package route

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
// ResetDetails (the router's sendLocalReply, which can only reset the
// stream by then, sets its details all the same).
const DetailsViaUpstream = "via_upstream"

// DetailsRouteTimeout is the response code details of a request the
// route timeout ended, before its response head or after it (Envoy's
// ResponseCodeDetails ResponseTimeout).
const DetailsRouteTimeout = "upstream_response_timeout"

// ResetDetails is the response code details of the local reply to an
// upstream reset of reason (as the details write it: "protocol_error",
// "remote_reset", "connection_termination", ...), one rule for both
// request paths: Envoy's router (Filter::onUpstreamReset) says
// upstream_reset_before_response_started{reason}, or, once the response
// started, upstream_reset_after_response_started{reason}. A reset that
// gets a local reply comes before the final response head, so started
// means that a 1xx came which the router took (Special1xx:
// Filter::onUpstream1xxHeaders sets downstream_response_started_).
func ResetDetails(reason string, started bool) string {
	if started {
		return "upstream_reset_after_response_started{" + reason + "}"
	}
	return "upstream_reset_before_response_started{" + reason + "}"
}
