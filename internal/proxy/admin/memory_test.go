package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
)

// TestMemory: /memory answers Envoy's six fields as decimal strings, and
// "allocated" follows the heap: it grows by at least what the test keeps
// alive.
func TestMemory(t *testing.T) {
	h := Handler(Source{})
	read := func() map[string]uint64 {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/memory", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("/memory: status %d", rec.Code)
		}
		var raw map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
			t.Fatalf("/memory: %v: %s", err, rec.Body)
		}
		out := map[string]uint64{}
		for _, k := range []string{"allocated", "heap_size", "pageheap_unmapped", "pageheap_free", "total_thread_cache", "total_physical_bytes"} {
			v, err := strconv.ParseUint(raw[k], 10, 64)
			if err != nil {
				t.Fatalf("/memory: %s = %q: %v", k, raw[k], err)
			}
			out[k] = v
		}
		if len(raw) != len(out) {
			t.Errorf("/memory: fields %v, want Envoy's six", raw)
		}
		return out
	}
	before := read()
	if before["allocated"] == 0 || before["allocated"] > before["heap_size"] || before["total_physical_bytes"] < before["allocated"] {
		t.Errorf("/memory: inconsistent %v", before)
	}
	const keep = 16 << 20
	b := make([]byte, keep)
	for i := range b {
		b[i] = byte(i)
	}
	after := read()
	runtime.KeepAlive(b)
	if after["allocated"] < before["allocated"]+keep {
		t.Errorf("/memory: allocated %d with %d more bytes live, %d before", after["allocated"], keep, before["allocated"])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/memory", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /memory: status %d, want 405", rec.Code)
	}
}
