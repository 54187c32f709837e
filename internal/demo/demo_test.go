package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns/netnstest"
)

// TestDemo runs weft demo briefly in each layout and checks from its output
// that requests flowed, were split about 4:1 between green and yellow, and
// passed through the proxies (their own request counters).
func TestDemo(t *testing.T) {
	bin := buildWeft(t)
	if missing := missingPieces(bin); len(missing) > 0 {
		t.Skipf("SKIPPING weft demo: weft does not have %s yet (issues 3, 4 and 5a); this skip goes away when they land",
			strings.Join(missing, ", "))
	}
	tests := []struct {
		layout  string
		through []string // the proxies' counters in the summary, each non-zero
	}{
		// The gateway takes the request in, then sends it out of its
		// egress listener to green or yellow.
		{LayoutLoopback, []string{`gateway in=[1-9]\d* out=[1-9]\d*`}},
		// red's app sends out through red's proxy; green's and yellow's
		// proxies take the requests in for their apps.
		{LayoutNetns, []string{`red in=\d+ out=[1-9]\d*`, `green in=[1-9]\d*`, `yellow in=[1-9]\d*`}},
	}
	for _, tt := range tests {
		t.Run(tt.layout, func(t *testing.T) {
			if tt.layout == LayoutNetns {
				netnstest.Require(t, "iptables", "iptables-restore", "setpriv")
			}
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := Run(ctx, Options{
				Binary: bin, Layout: tt.layout, Duration: 5 * time.Second, Rate: 100, Out: &out,
			})
			t.Logf("demo output:\n%s", out.String())
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			summary := lastLine(out.String(), "weft demo: ")
			m := regexp.MustCompile(`^weft demo: (\d+) requests in \S+, (\d+) errors; overall green ([\d.]+)% yellow ([\d.]+)%`).FindStringSubmatch(summary)
			if m == nil {
				t.Fatalf("summary %q does not show a green/yellow split", summary)
			}
			sent, _ := strconv.Atoi(m[1])
			green, _ := strconv.ParseFloat(m[3], 64)
			if sent < 100 {
				t.Errorf("only %d requests in 5 s at 100/s", sent)
			}
			// Few hundred requests: 80 % within 10 points is far
			// outside chance (about 4 standard deviations).
			if green < 70 || green > 90 {
				t.Errorf("green share %.1f%%, want about 80%%", green)
			}
			for _, re := range tt.through {
				if !regexp.MustCompile(re).MatchString(summary) {
					t.Errorf("summary %q does not show the requests in the proxies' counters (%s)", summary, re)
				}
			}
			if !strings.Contains(out.String(), "split: ") {
				t.Error("no live split line was printed")
			}
		})
	}
	if left, _ := filepath.Glob("/run/netns/" + netnsPrefix + "*"); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

func lastLine(s, prefix string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}

// buildWeft builds the weft binary into a directory the proxy's UID can
// read.
func buildWeft(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weft-demo-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "weft")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/weftmesh/weft/cmd/weft").CombinedOutput(); err != nil {
		t.Fatalf("go build weft: %v\n%s", err, out)
	}
	return bin
}

// missingPieces names the parts of weft the demo needs that are not built
// yet.
func missingPieces(bin string) []string {
	var missing []string
	server, _ := exec.Command(bin, "server", "-h").CombinedOutput()
	for _, flag := range []string{"-xds-addr", "-dns-addr"} {
		if !strings.Contains(string(server), flag) {
			missing = append(missing, "weft server "+flag)
		}
	}
	if p, _ := exec.Command(bin, "proxy", "-h").CombinedOutput(); strings.Contains(string(p), "unknown command") {
		missing = append(missing, "weft proxy")
	}
	return missing
}
