package route

// DropsLength reports whether a response head of status loses its
// Content-Length on the way to the client: a 1xx or a 204, whose
// "Content-Length: 0" Envoy's HTTP/1 codec removes
// (ClientConnectionImpl::onHeadersCompleteBase; any other value is
// BodylessFramed's protocol error), so that a 204's client gets none.
func DropsLength(status int) bool {
	return status < 200 || status == 204
}

// HeadChunked reports whether a response without a Content-Length to an
// HTTP/1.1 client's request (a HEAD one when head) announces
// "Transfer-Encoding: chunked" while writing no body: Envoy's HTTP/1.1
// encoder so announces a HEAD answer of any status but 204 and 304
// (StreamEncoderImpl::encodeHeadersBase in
// source/common/http/http1/codec_impl.cc).
func HeadChunked(head bool, status int) bool {
	return head && status != 204 && status != 304
}
