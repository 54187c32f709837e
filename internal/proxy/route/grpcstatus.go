package route

// IsGRPC reports whether a request whose first Content-Type value is
// contentType is a gRPC request, as Envoy tells one: application/grpc,
// or application/grpc+ and a codec (application/grpc-web is not one). A
// route's grpc match takes it, and the proxy's local replies to it are
// gRPC statuses (GRPCStatusFor). For a header value as a string or as
// the bytes of a head, without copying them.
func IsGRPC[S ~string | ~[]byte](contentType S) bool {
	const grpc = "application/grpc"
	if len(contentType) < len(grpc) {
		return false
	}
	for i := range len(grpc) {
		if contentType[i] != grpc[i] {
			return false
		}
	}
	return len(contentType) == len(grpc) || contentType[len(grpc)] == '+'
}

// GRPCStatusFor maps an HTTP status to the gRPC code Envoy answers a
// gRPC request's local reply with (trailers only, grpc-status).
func GRPCStatusFor(code int) int {
	switch code {
	case 400:
		return 13
	case 401:
		return 16
	case 403:
		return 7
	case 404:
		return 12
	case 429, 502, 503, 504:
		return 14
	}
	return 2
}
