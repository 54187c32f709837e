package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkH2COneHopPost is BenchmarkH2COneHop for a POST with a small
// body (a gRPC unary call's shape: HEADERS, then DATA with END_STREAM),
// on the goroutine path and on the loops: a request whose body is not
// known whole at its head, whose route timeout waits for its end.
func BenchmarkH2COneHopPost(b *testing.B) {
	for _, p := range []proxyPath{{"goroutines", true, true}, {"loops", false, false}} {
		b.Run(p.name, func(b *testing.B) {
			h := newHarness(b, p.on)
			up := h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "blue")
			}))
			pushH2Egress(h, up)
			c := h2cClient(b)
			url := "http://" + h.addr("egress") + "/"
			postsInParallel(b, c, url, "blue")
		})
	}
}

// postsInParallel runs the benchmark's loop: POSTs of "hello" to url,
// each answered 200 with want (any body when want is "").
func postsInParallel(b *testing.B, c *http.Client, url, want string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Post(url, "text/plain", strings.NewReader("hello"))
			if err != nil {
				b.Error(err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || (want != "" && string(body) != want) || err != nil {
				b.Errorf("%d %q (%v), want 200 %q", resp.StatusCode, body, err, want)
				return
			}
		}
	})
}
