package route

// Expectation is what a request's Expect header asks of weft proxy, as
// Envoy's connection manager reads it without proxy_100_continue
// (ActiveStream::decodeHeaders in source/common/http/conn_manager_impl.cc):
// only a value of 100-continue, as a whole and case aside, is answered
// by the proxy (100 Continue once the head is read) and removed; any
// other value is forwarded as it came. The value is the header's lines
// joined by commas, the empty ones left out, as Envoy's header map joins
// the lines of a header it keeps inline (HeaderMapImpl::insertByKey):
// "100-continue" on two lines is "100-continue,100-continue", another
// expectation. Both HTTP/1.1 request paths read a head's Expect lines
// with ExpectLine, in order. (Over HTTP/2 the goroutine path's server,
// x/net's, decides, and the loops as it does: H2List.Continue.)
type Expectation uint8

const (
	// ExpectNothing: no Expect line, or only empty ones (forwarded).
	ExpectNothing Expectation = iota
	// ExpectContinue: the value is 100-continue. Every Expect line is
	// removed, and a client speaking HTTP/1.1 is answered 100 Continue.
	ExpectContinue
	// ExpectOther: any other value; the lines are forwarded.
	ExpectOther
)

// ExpectLine is the expectation of a request whose Expect lines before
// this one asked e, and this one's value is v (trimmed of SP and HTAB).
func ExpectLine[T ~string | ~[]byte](e Expectation, v T) Expectation {
	switch {
	case len(v) == 0:
		return e
	case e == ExpectNothing && EqualFoldASCII(v, "100-continue"):
		return ExpectContinue
	}
	return ExpectOther
}

// Special1xx reports whether an upstream's 1xx response of status is one
// Envoy's router takes before its filter manager drops it without
// proxy_100_continue (HeaderUtility::isSpecial1xx: 100, 102, 103, 104):
// the router then ends the request's retries (Filter::onUpstream1xxHeaders
// resets its retry state, and maybeRetryReset retries nothing once the
// response started), so that neither a retriable status nor a reset after
// it is retried. Any other 1xx but 101 is dropped unseen by the upstream
// request (UpstreamRequest::decodeHeaders) and ends nothing. Both request
// paths drop every upstream 1xx but 101, and end retries at these.
func Special1xx(status int) bool {
	return status == 100 || status == 102 || status == 103 || status == 104
}
