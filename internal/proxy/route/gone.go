package route

// A client that leaves while its stream is in flight, as Envoy's
// connection manager logs it. Its connection's end (RemoteClose:
// doConnectionClose resets every stream, each counted in
// downstream_rq_rx_reset by ActiveStream::onResetStream) is logged with
// DetailsRemoteDisconnect and flagged DC (completeRequest, remote_close_).
// An HTTP/2 client's RST_STREAM resets that stream alone, counted the
// same; its details are those Envoy's HTTP/2 codec gives a reset it
// received (ConnectionImpl::onStreamClose), DetailsH2RemoteReset, and
// with no other flag and no status it is flagged DC too. Both request
// paths log these (httpconn's stream.clientLeft, evloop's clientGone and
// its RST_STREAM handling).
const (
	DetailsRemoteDisconnect = "downstream_remote_disconnect"
	DetailsH2RemoteReset    = "http2.remote_reset"
)
