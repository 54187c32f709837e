package route

// BodylessFramed reports whether an HTTP/1.1 upstream's response head of
// status frames a body its status cannot have, which Envoy's HTTP/1 codec
// takes as the upstream's protocol error
// (ClientConnectionImpl::onHeadersCompleteBase in
// source/common/http/http1/codec_impl.cc): a 1xx, 101 included, or a 204
// with a Transfer-Encoding line (te), or with a Content-Length (hasCL)
// other than "0" as written (cl). Lines of one value count as one, as
// both request paths' parsers merge them (Envoy's header map would join
// them, "0,0", and refuse the head). Such a head is answered as
// UpstreamProtocolError* on both request paths, before its 1xx counts for
// anything (Special1xx): the codec refuses it before the router sees it.
// A head it takes with "Content-Length: 0" goes on without that line (the
// codec removes it), so a 204's client gets no Content-Length.
func BodylessFramed[T ~string | ~[]byte](status int, te, hasCL bool, cl T) bool {
	if status >= 200 && status != 204 {
		return false
	}
	return te || hasCL && string(cl) != "0"
}
