package route

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
