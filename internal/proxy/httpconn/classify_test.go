package httpconn

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
)

// TestClassifyRefusedStream: an HTTP/2 upstream's REFUSED_STREAM before
// the response head, as x/net's transport hands it back (as is once its
// own retries are spent, or in the text of its error after a request
// body was written), is answered 503 with Envoy's reset reason remote
// refused stream reset, flagged UR, its details
// upstream_reset_before_response_started{remote_refused_stream_reset}
// (after a 1xx, ..._after_...), as the loops log it (h2uPeerReset,
// TestRefusedBeforeHeadLog). Its details said connection_termination.
func TestClassifyRefusedStream(t *testing.T) {
	refused := http2.StreamError{StreamID: 1, Code: http2.ErrCodeRefusedStream}
	errs := map[string]error{
		"stream error":               refused,
		"after the body was written": fmt.Errorf("http2: Transport: cannot retry err [%v] after Request.Body was written; define Request.GetBody to avoid this error", refused),
	}
	const body = "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
	for name, err := range errs {
		for started, details := range map[bool]string{
			false: "upstream_reset_before_response_started{remote_refused_stream_reset}",
			true:  "upstream_reset_after_response_started{remote_refused_stream_reset}",
		} {
			le, _, timedOut := (&stream{}).classify(context.Background(), context.Background(), err, nil, started)
			if le.code != 503 || le.flags != accesslog.UpstreamRemoteReset || le.details != details || le.body != body || timedOut {
				t.Errorf("%s, started %v: %d %v %q %q timed out %v; want 503 UR %q %q", name, started, le.code, le.flags, le.details, le.body, timedOut, details, body)
			}
		}
	}
}
