package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

// cpuTime is the user+system CPU time of the processes so far.
func cpuTime(ps []*os.Process) time.Duration {
	var total time.Duration
	for _, p := range ps {
		total += procstat.CPU(p.Pid)
	}
	return total
}

// memory is the summed memory of processes, in kB: resident (VmRSS),
// proportional (PSS: shared pages divided among the processes mapping
// them) and private (pages no other process maps).
type memory struct{ rss, pss, private, anon int64 }

func memKB(ps []*os.Process) memory {
	var m memory
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "Rss:":
				m.rss += v
			case "Pss:":
				m.pss += v
			case "Private_Clean:", "Private_Dirty:":
				m.private += v
			case "Anonymous:":
				m.anon += v
			}
		}
	}
	return m
}
