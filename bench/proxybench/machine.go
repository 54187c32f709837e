package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

// machine describes where the bench runs.
func machine(weft string) string {
	var model string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	size := int64(0)
	if fi, err := os.Stat(weft); err == nil {
		size = fi.Size()
	}
	return fmt.Sprintf("Machine: %d vCPU (%s), Linux %s, %s; weft binary %.1f MB; load average at start %s.\n",
		runtime.NumCPU(), model, strings.TrimSpace(string(kernel)), runtime.Version(), float64(size)/1e6, loadavg.OneMinute())
}
