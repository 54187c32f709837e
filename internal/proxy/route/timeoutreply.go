package route

// GRPCDeadlineExceeded is gRPC's DEADLINE_EXCEEDED status.
const GRPCDeadlineExceeded = 4

// StreamTimeoutReply is the local reply a stream idle timeout, or
// (duration) a max stream duration, makes before the response head, one
// rule for both request paths: its status is 504 once the request was
// received whole (received: its end came, or it had no body) and 408
// while it was still arriving, as Envoy's connection manager answers
// (Http::Utility::maybeRequestTimeoutCode(remoteDecodeComplete()), in
// ActiveStream::onIdleTimeout and onStreamMaxDurationReached, since
// Envoy 1.22; a 408 costs an HTTP/1.1 client its connection, a 504 need
// not). To a gRPC request the max stream duration says
// DEADLINE_EXCEEDED whatever the status (onStreamMaxDurationReached
// passes it to sendLocalReply), the idle timeout what its status maps
// to (GRPCStatusFor: UNAVAILABLE for 504, UNKNOWN for 408).
func StreamTimeoutReply(received, duration bool) (status, grpcStatus int) {
	status = 408
	if received {
		status = 504
	}
	if duration {
		return status, GRPCDeadlineExceeded
	}
	return status, GRPCStatusFor(status)
}
