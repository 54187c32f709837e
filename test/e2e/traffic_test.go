package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
)

// waitAll waits, within the propagation goal, until 20 requests in a row
// give only bodies from allowed (and, if want is set, include it).
func (w *world) waitAll(t *testing.T, from *netns.Host, url, want string, allowed ...string) {
	t.Helper()
	if want != "" {
		allowed = append(allowed, want)
	}
	took := waitFor(t, "only "+strings.Join(allowed, ", ")+" from "+url, propagation+2*time.Second, func() (bool, error) {
		c := w.count(from, url, 20)
		for body := range c.Bodies {
			if !slices.Contains(allowed, body) {
				return false, fmt.Errorf("got %v", c.Bodies)
			}
		}
		return c.Errors == 0, fmt.Errorf("got %v, errors %d: %s", c.Bodies, c.Errors, c.FirstError)
	})
	t.Logf("route change took %s to show", took.Round(time.Millisecond))
}

// assertSplit sends splitRequests requests and checks each body's share.
func (w *world) assertSplit(t *testing.T, from *netns.Host, url string, want map[string]float64) {
	t.Helper()
	c := w.count(from, url, splitRequests)
	if c.Errors > 0 {
		t.Errorf("%d of %d requests to %s failed, first: %s", c.Errors, splitRequests, url, c.FirstError)
	}
	var parts []string
	for body, pct := range want {
		got := 100 * float64(c.Bodies[body]) / splitRequests
		parts = append(parts, fmt.Sprintf("%s %.1f%%", body, got))
		if got < pct-splitTolerance || got > pct+splitTolerance {
			t.Errorf("%s share of %s = %.1f%% over %d requests, want %.0f%% ± %.0f points (all: %v)", body, url, got, splitRequests, pct, splitTolerance, c.Bodies)
		}
	}
	for body := range c.Bodies {
		if _, ok := want[body]; !ok {
			t.Errorf("%s answered %q %d times, want only %v", url, body, c.Bodies[body], slices.Sorted(maps.Keys(want)))
		}
	}
	slices.Sort(parts)
	t.Logf("%s from %s over %d requests: %s", url, from.Name, splitRequests, strings.Join(parts, ", "))
}

// assertTraffic waits up to 10 s for GET /v1/traffic to show source's
// calls through service split as want says (percent, within
// splitTolerance points).
func (w *world) assertTraffic(t *testing.T, source, service string, want map[string]float64) {
	t.Helper()
	var last string
	took := waitFor(t, "the split in /v1/traffic", 10*time.Second, func() (bool, error) {
		last = w.signedCurl(t, "/v1/traffic?mesh=color-mesh")
		var v struct {
			Edges []struct {
				Source            struct{ Kind, Name string }
				VirtualService    string
				Target            struct{ Kind, Name string }
				RequestsPerSecond float64
			}
		}
		if err := json.Unmarshal([]byte(last), &v); err != nil {
			return false, err
		}
		rps, sum := map[string]float64{}, 0.0
		for _, e := range v.Edges {
			if e.Source.Name == source && e.VirtualService == service {
				rps[e.Target.Name] += e.RequestsPerSecond
				sum += e.RequestsPerSecond
			}
		}
		for target, pct := range want {
			if got := 100 * rps[target] / sum; sum == 0 || got < pct-splitTolerance || got > pct+splitTolerance {
				return false, fmt.Errorf("%s %.1f%% of %.1f requests/s", target, got, sum)
			}
		}
		return len(rps) == len(want), fmt.Errorf("targets %v", rps)
	})
	t.Logf("/v1/traffic after %v: %s", took.Round(100*time.Millisecond), last)
}
