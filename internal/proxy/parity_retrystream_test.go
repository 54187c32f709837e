package proxy

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// TestResponseNotHeldByRetryBodySamePaths: a request under a retry
// policy whose body is still coming (a bidirectional stream whose client
// sends its next message only after the first answer) gets its response
// as the upstream sends it, on every path: keeping the body for a retry
// must not wait on the client's next bytes. Round 33 tried dropping the
// goroutine path's retry copy at the response's start under the lock its
// body reads hold across the client's read, which would have held the
// response head until the client sent more: here, never.
func TestResponseNotHeldByRetryBodySamePaths(t *testing.T) {
	checkStreamsWhileBodyComes(t, 4, func(prefix, cluster string) *routev3.Route {
		r := timedRoute(prefix, cluster, rtsRouteTimeout)
		r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(2)}
		return r
	}, " (the response held behind the request's body)")
}
