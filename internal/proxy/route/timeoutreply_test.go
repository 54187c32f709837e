package route

import "testing"

// TestStreamTimeoutReply: Envoy's maybeRequestTimeoutCode and the gRPC
// statuses its local replies carry (httpToGrpcStatus, or the max stream
// duration's DEADLINE_EXCEEDED).
func TestStreamTimeoutReply(t *testing.T) {
	for _, c := range []struct {
		name               string
		received, duration bool
		status, grpc       int
	}{
		{"idle, request arriving", false, false, 408, 2},
		{"idle, request received", true, false, 504, 14},
		{"duration, request arriving", false, true, 408, 4},
		{"duration, request received", true, true, 504, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, grpc := StreamTimeoutReply(c.received, c.duration)
			if status != c.status || grpc != c.grpc {
				t.Errorf("StreamTimeoutReply(%v, %v) = %d, grpc-status %d; want %d, grpc-status %d", c.received, c.duration, status, grpc, c.status, c.grpc)
			}
		})
	}
}
