package route

// The :scheme an HTTP/2 upstream is sent, the same on both request paths,
// as Envoy sends it (read in its 1.2x and 1.3x sources). Envoy sends the
// downstream request's :scheme, whatever the upstream's transport: the
// router's FilterUtility::setUpstreamScheme (source/common/router/
// router.cc) keeps a valid :scheme as it is, and every request has one by
// then (so since the runtime guard preserve_downstream_scheme of 1.18,
// since removed). An HTTP/2 client's :scheme is its own (its codec
// requires one). An HTTP/1.1 request gets one from its connection manager
// (ConnectionManagerUtility::mutateRequestHeaders and getScheme in
// source/common/http/conn_manager_utility.cc): x-forwarded-proto's value
// when it is a valid scheme, else https on a TLS connection and http
// otherwise. That x-forwarded-proto is the client's, which the upstream
// then gets as it came, or, when the request has none or
// use_remote_address is on (with xff_num_trusted_hops 0, which weft proxy
// does not read), the connection's scheme, which the connection manager
// writes in the request's x-forwarded-proto. A valid scheme is http or
// https, case aside (Utility::schemeIsValid, case-insensitive since the
// runtime guard handle_uppercase_scheme), kept as written; several
// x-forwarded-proto lines, which the codec joins with commas, are not one.

// H1Scheme is the :scheme of an HTTP/1.1 request whose target's scheme
// is abs ("" for an origin-form target), whose x-forwarded-proto lines
// are n (0: none; use_remote_address on counts as none) and the first's
// value xfp, on a TLS connection when tls: what Envoy sends an HTTP/2
// upstream for it. An absolute-form target's scheme is the request's,
// lower-cased, whatever its x-forwarded-proto and connection: Envoy's
// HTTP/1.1 codec sets :scheme from it (ServerConnectionImpl::handlePath,
// allow_absolute_url on by default), and the connection manager keeps a
// :scheme the request has. (Envoy refuses a target whose scheme is
// neither http nor https; weft proxy routes it, its :scheme as if it
// were origin-form.)
func H1Scheme[V ~string | ~[]byte](abs string, xfp V, n int, tls bool) string {
	switch {
	case EqualFoldASCII(abs, "http"):
		return "http"
	case EqualFoldASCII(abs, "https"):
		return "https"
	}
	if n == 1 {
		switch {
		case string(xfp) == "http":
			return "http"
		case string(xfp) == "https":
			return "https"
		case EqualFoldASCII(xfp, "http"), EqualFoldASCII(xfp, "https"):
			return string(xfp)
		}
	}
	if tls {
		return "https"
	}
	return "http"
}
