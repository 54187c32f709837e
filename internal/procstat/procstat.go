// Package procstat reads what Linux's /proc tells of a process that the
// benchmarks report: its CPU time.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ticks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on Linux.
const ticks = 100

// CPU is the user+system CPU time process pid has used so far; 0 when
// it cannot be read (no such process, not Linux).
func CPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseCPU(b)
}

// parseCPU reads utime and stime (the 14th and 15th fields) from a
// /proc/<pid>/stat line; the command name, in parentheses, may hold
// spaces and parentheses of its own, so the fields are counted after the
// last ')'.
func parseCPU(stat []byte) time.Duration {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / ticks
}
