package proxy

import (
	"os"
	"strings"
	"testing"
	"time"
)

// pathResult is what a parity test saw on one request path: each
// exchange's answer by its name, the counters and the sorted access log.
type pathResult struct {
	answers    map[string]string
	stats, log string
}

// awaitLog waits until the access log file holds at least lines lines
// and returns them sorted.
func awaitLog(t *testing.T, file string, lines int) string {
	t.Helper()
	var log string
	waitUntil(t, 5*time.Second, "the access log lines", func() bool {
		b, _ := os.ReadFile(file)
		log = string(b)
		return strings.Count(log, "\n") >= lines
	})
	return sortLines(log)
}

// sameAsGoroutinePath fails for each path whose answers (those named),
// counters or access log differ from the goroutine path's.
func sameAsGoroutinePath(t *testing.T, results map[string]pathResult, names []string) {
	t.Helper()
	want := results["goroutines"]
	for path, got := range results {
		for _, n := range names {
			if got.answers[n] != want.answers[n] {
				t.Errorf("%s, %s: answered\n%s\nthe goroutine path\n%s", path, n, got.answers[n], want.answers[n])
			}
		}
		if got.stats != want.stats {
			t.Errorf("%s: counters\n%s\nthe goroutine path's\n%s", path, got.stats, want.stats)
		}
		if got.log != want.log {
			t.Errorf("%s: access log\n%s\nthe goroutine path's\n%s", path, got.log, want.log)
		}
	}
}
