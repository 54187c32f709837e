package route

// MaxRetryBuffer is how much of a request body the proxy keeps to send
// again on a retry, on every path: the goroutine path's replay buffer
// (httpconn's replayBody) and the loops' (evloop: an HTTP/1.1 attempt's
// request bytes, an HTTP/2 client stream's replay). It is Envoy's
// default per-connection buffer limit (1 MiB), which bounds what its
// router buffers for retries unless the route sets
// per_request_buffer_limit_bytes (Filter::decodeData,
// retry_shadow_buffer_limit_): a request whose body outgrows it is sent
// once, its retries over.
const MaxRetryBuffer = 1 << 20

// OutgrewRetryBuffer reports whether n bytes of a request body are past
// MaxRetryBuffer: no retry follows then on any path (Envoy's
// Filter::decodeData drops its retry state once the body outgrows its
// buffer limit). The one test of the bound both request paths use.
func OutgrewRetryBuffer(n int64) bool { return n > MaxRetryBuffer }
