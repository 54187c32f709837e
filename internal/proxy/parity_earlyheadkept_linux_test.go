package proxy

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestEarlyHeadKeptTailThenRestSamePaths: under a retry policy, the
// upstream answers its head before it reads the body, on the first
// attempt, while the client still streams it: the kept chain's unsent
// tail (dropKept / h2uCutReplay) then what comes after (u.out / pending)
// must arrive whole and in order, on every path (round 36's re-read: the
// early-answer tests send a repeating pattern, which a reorder keeps).
// Position-dependent bytes; the second size also outgrows the retry
// buffer while it streams.
func TestEarlyHeadKeptTailThenRestSamePaths(t *testing.T) {
	for _, size := range []int{40<<14 + 333, 1<<20 + 70<<10 + 5} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i*13 + i>>12)
		}
		want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			_ = rc.EnableFullDuplex()
			w.WriteHeader(http.StatusOK)
			_ = rc.Flush()
			answerBodyDigest(w, r)
		})
		up := slowReadingUpstream(t, handler)
		for _, p := range proxyPaths() {
			t.Run(fmt.Sprintf("%d/%s", size, p.name), func(t *testing.T) {
				h := newHarness(t, p.on)
				postRetryShapes(t, h, up, "5xx,reset", strings.ReplaceAll(p.name, " ", "-"), body, func(path string, status int, got []byte, err error) {
					if err != nil || status != http.StatusOK || string(got) != want {
						t.Errorf("%s: %d %q (%v), want 200 %q", path, status, got, err, want)
					}
				})
			})
		}
	}
}
