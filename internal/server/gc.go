package server

import (
	"runtime/debug"
	"strconv"
)

// DefaultGCPercent is weft server's garbage collection target (GOGC)
// when the environment sets none. A write that reaches every proxy
// recomputes and re-encodes each one's configuration, and the garbage
// that makes was a quarter of the server's CPU at Go's default of 100;
// at 200 the recompute costs about 15 % less CPU for about 30 % more
// resident memory, and 400 saved no more (docs/bench/xds.md, "GOGC").
const DefaultGCPercent = 200

// SetGCDefault sets the collector's target to DefaultGCPercent unless
// getenv("GOGC") is set: the user's GOGC (and GOMEMLIMIT, which the
// runtime reads itself) always wins. It returns the GOGC in force as the
// environment spells it, or DefaultGCPercent's.
func SetGCDefault(getenv func(string) string) string {
	if v := getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(DefaultGCPercent)
	return strconv.Itoa(DefaultGCPercent)
}
