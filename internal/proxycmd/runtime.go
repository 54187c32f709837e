package proxycmd

import (
	"os"
	"runtime"
	"runtime/debug"
)

// DefaultGCPercent is the proxy's GOGC when the environment sets none.
// Most of a sidecar's live heap is what start-up builds (protobuf
// descriptors and the compiled configuration, 3-4 MB), and what a request
// allocates dies with it, so Go's default of 100 keeps twice the live heap
// resident for collections it hardly needs. 50 keeps about 2 MB less at
// 1,000 requests/s for a collection every few hundred milliseconds over a
// small heap (docs/bench/proxy.md, "Memory: a proxy-only binary").
const DefaultGCPercent = 50

// tuneRuntime sets the proxy's GOGC unless GOGC is set in its environment
// (which the runtime has then applied, "off" included), and turns off the
// sampling of heap profiles when nothing can read them: without --pprof the
// samples' records would only take memory. GOMEMLIMIT stays the user's:
// at the proxy's size a limit low enough to matter makes it collect
// continuously.
func tuneRuntime(pprof bool) {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(DefaultGCPercent)
	}
	if !pprof {
		runtime.MemProfileRate = 0
	}
}
