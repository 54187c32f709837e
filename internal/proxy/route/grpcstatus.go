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

// What GRPCStatus reads besides a known gRPC status (0 to 16).
const (
	// NoGRPCStatus: the value is empty (or the field absent).
	NoGRPCStatus = -1
	// InvalidGRPCStatus: not a number, or past the known statuses,
	// which Envoy reads as its InvalidCode.
	InvalidGRPCStatus = 17
)

// GRPCStatus reads a grpc-status value as Envoy's
// Grpc::Common::getGrpcStatus does (absl::SimpleAtoi into an unsigned,
// blanks around it and a leading + allowed): the status, NoGRPCStatus
// when empty, InvalidGRPCStatus when not a known status. For a header
// value as a string or as the bytes of a head, without copying them.
func GRPCStatus[S ~string | ~[]byte](v S) int {
	i, j := 0, len(v)
	for i < j && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	for j > i && (v[j-1] == ' ' || v[j-1] == '\t') {
		j--
	}
	if i == j {
		if len(v) == 0 {
			return NoGRPCStatus
		}
		return InvalidGRPCStatus
	}
	if v[i] == '+' {
		i++
	}
	if i == j {
		return InvalidGRPCStatus
	}
	n := 0
	for ; i < j; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return InvalidGRPCStatus
		}
		n = n*10 + int(c-'0')
		if n >= InvalidGRPCStatus {
			n = InvalidGRPCStatus // and no overflow however long
		}
	}
	return n
}

// HTTPStatusForGRPC is the HTTP status Envoy's router takes a gRPC
// status for (Grpc::Utility::grpcToHttpStatus): what outlier detection
// sees of a gRPC response head with a grpc-status, and whether a gRPC
// response counts in its host's rq_success or rq_error (below 500 or
// not; cluster.Cluster.ResponseHead).
func HTTPStatusForGRPC(status int) int {
	switch status {
	case 0: // OK
		return 200
	case 1: // CANCELLED: client closed request
		return 499
	case 3, 9, 11: // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
		return 400
	case 4: // DEADLINE_EXCEEDED
		return 504
	case 5: // NOT_FOUND
		return 404
	case 6, 10: // ALREADY_EXISTS, ABORTED
		return 409
	case 7: // PERMISSION_DENIED
		return 403
	case 8: // RESOURCE_EXHAUSTED
		return 429
	case 12: // UNIMPLEMENTED
		return 501
	case 14: // UNAVAILABLE
		return 503
	case 16: // UNAUTHENTICATED
		return 401
	}
	return 500 // UNKNOWN, INTERNAL, DATA_LOSS, and an invalid status
}

// ResponseHead is an upstream response head as Envoy's router reads it
// for its host's counters and outlier detection
// (Filter::onUpstreamHeaders); cluster.Cluster.ResponseHead counts it.
type ResponseHead struct {
	Status int
	// GRPC: the request is gRPC (IsGRPC), whose response's grpc-status
	// is read: GRPCStatus is then the head's (GRPCStatus). Any other
	// request's is not.
	GRPC       bool
	GRPCStatus int
	// End: the head ends the response (a trailers-only gRPC answer).
	End bool
	// Retried: the router retries the attempt instead of sending the
	// response on.
	Retried bool
}
