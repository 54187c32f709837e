package proxy

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRetryBackoffFloorSamePaths: a retry_back_off base_interval below
// 1 ms backs off as one of 1 ms, with the default max_interval of 10 ms,
// on every path, as Envoy's RetryPolicyImpl raises it (the interval read
// in whole milliseconds by PROTOBUF_GET_MS_REQUIRED, then at least 1) and
// JitteredExponentialBackOffStrategy draws random() % interval ms from it,
// the interval doubling up to the max. So the back-offs before retries 4
// on are drawn below 8 ms, then below 10 ms, and among 36 such draws one of
// 4 ms or more is as good as certain (a miss is 0.4^32 or less); before,
// every path took the 100 us as it came, so that no back-off reached 1 ms
// (the max ten times 100 us). A lower bound only: the gap between two
// attempts, as the upstream sees them come, holds the back-off and the
// proxy's work, never less.
func TestRetryBackoffFloorSamePaths(t *testing.T) {
	const retries = 40
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			var mu sync.Mutex
			var arrivals []time.Time
			fails := h1Upstream(t, func(c net.Conn, _ *http.Request, _ []byte) bool {
				mu.Lock()
				arrivals = append(arrivals, time.Now())
				mu.Unlock()
				_, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
				return err == nil
			})
			r := routeTo("/", "fails")
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(retries),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(100 * time.Microsecond)}}
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, r)), edsCluster("fails"), cla("fails", fails))
			resp, err := http.Get("http://" + h.addr("egress") + "/x")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("answered %d; want 503 after the retries", resp.StatusCode)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(arrivals) != retries+1 {
				t.Fatalf("%d attempts; want %d", len(arrivals), retries+1)
			}
			var most time.Duration
			for i := 1; i < len(arrivals); i++ {
				most = max(most, arrivals[i].Sub(arrivals[i-1]))
			}
			if most < 4*time.Millisecond {
				t.Errorf("the longest gap between two of %d attempts: %v; want 4 ms or more (back-offs drawn below 10 ms)",
					len(arrivals), most)
			}
		})
	}
}
