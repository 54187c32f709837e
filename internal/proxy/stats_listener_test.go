package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStatsListener: --stats-addr serves the probe and the scraper what
// they need (/ready, /stats, /stats/prometheus) and nothing of the
// configuration, which stays on the admin listener.
func TestStatsListener(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StatsAddr = "127.0.0.1:0" })
	waitUntil(t, 10*time.Second, "the stats listener", func() bool { return h.p.StatsAddr() != "" })
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + h.p.StatsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/stats/prometheus"); code != 200 || !strings.Contains(body, "envoy_") {
		t.Errorf("/stats/prometheus: %d %.200q", code, body)
	}
	if code, body := get("/stats"); code != 200 || !strings.Contains(body, "server.") {
		t.Errorf("/stats: %d %.200q", code, body)
	}
	// /ready says what the admin listener's says (503 PRE_INITIALIZING
	// until the proxy has its configuration).
	resp, err := http.Get("http://" + h.p.AdminAddr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, body := get("/ready"); code != resp.StatusCode || (body != "LIVE\n" && body != "PRE_INITIALIZING\n") {
		t.Errorf("/ready on the stats listener: %d %q; the admin's: %d", code, body, resp.StatusCode)
	}
	for _, path := range []string{"/config_dump", "/clusters", "/listeners", "/server_info", "/debug/pprof/"} {
		if code, _ := get(path); code != http.StatusNotFound {
			t.Errorf("%s on the stats listener: %d, want 404", path, code)
		}
	}
	if !strings.Contains(h.admin("/config_dump"), "configs") {
		t.Error("the admin listener no longer serves /config_dump")
	}
}
