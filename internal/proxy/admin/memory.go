package admin

import (
	"net/http"
	"runtime/metrics"
	"strconv"
	"strings"
)

// memory is Envoy's /memory answer (envoy.admin.v3.Memory in proto3 JSON,
// whose uint64 fields are strings), filled from Go's runtime/metrics.
// Written by hand: go-control-plane's admin/v3 package would link and
// register every admin type for this one message.
type memory struct {
	// Allocated: bytes of heap objects, live or not yet swept.
	Allocated string `json:"allocated"`
	// HeapSize: the heap's address space (objects, free and unused room in
	// spans, stacks, and what was returned to the system).
	HeapSize string `json:"heap_size"`
	// PageheapUnmapped: heap memory returned to the system.
	PageheapUnmapped string `json:"pageheap_unmapped"`
	// PageheapFree: free heap memory not yet returned.
	PageheapFree string `json:"pageheap_free"`
	// TotalThreadCache: always 0, Go's allocator keeps no per-thread
	// caches of that kind (its per-P spans count as heap).
	TotalThreadCache string `json:"total_thread_cache"`
	// TotalPhysicalBytes: everything the runtime maps (heap, stacks, GC
	// metadata, the rest), less what it returned.
	TotalPhysicalBytes string `json:"total_physical_bytes"`
}

// readMemory reads the runtime's memory classes: no stop-the-world, unlike
// runtime.ReadMemStats, so a scraper does not pause the proxy.
func readMemory() memory {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/total:bytes"},
	}
	metrics.Read(s)
	v := make(map[string]uint64, len(s))
	for _, m := range s {
		if m.Value.Kind() == metrics.KindUint64 {
			v[strings.TrimSuffix(strings.TrimPrefix(m.Name, "/memory/classes/"), ":bytes")] = m.Value.Uint64()
		}
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	heap := v["heap/objects"] + v["heap/free"] + v["heap/released"] + v["heap/stacks"] + v["heap/unused"]
	return memory{
		Allocated:          u(v["heap/objects"]),
		HeapSize:           u(heap),
		PageheapUnmapped:   u(v["heap/released"]),
		PageheapFree:       u(v["heap/free"]),
		TotalThreadCache:   "0",
		TotalPhysicalBytes: u(v["total"] - v["heap/released"]),
	}
}

func handleMemory(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, readMemory())
}
