package route

// The local reply to a request whose upstream sent a response head its
// codec could not take, one rule for both request paths: a head over
// MaxHeadBytes (Envoy's cluster max_response_headers_kb default, which
// App Mesh does not set), a status line or header line it cannot read, a
// 101 to a request that asked no upgrade, an HTTP/2 1xx ending its
// stream. Envoy's codec client then closes the connection as a protocol
// error (CodecClient::onData, onEvent in source/common/http/
// codec_client.cc) and resets the stream with reason ProtocolError; the
// router answers it as any reset before a response started
// (Filter::onUpstreamReset in source/common/router/router.cc): 503, this
// body, these details, flagged UPE (accesslog.UpstreamProtocolError).
const (
	UpstreamProtocolErrorStatus  = 503
	UpstreamProtocolErrorBody    = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	UpstreamProtocolErrorDetails = "upstream_reset_before_response_started{protocol_error}"
)
