// Package procstat reads what Linux's /proc tells of a process that the
// benchmarks report: its CPU time, its read and write system calls, its
// minor page faults and its memory.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ticks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on Linux.
const ticks = 100

// CPU is the user+system CPU time process pid has used so far; 0 when
// it cannot be read (no such process, not Linux).
func CPU(pid int) time.Duration {
	return parseCPU(readStat(pid))
}

// readStat is process pid's /proc/<pid>/stat line; nil when it cannot be
// read (no such process, not Linux).
func readStat(pid int) []byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return b
}

// statFields is the fields of a /proc/<pid>/stat line after the command
// name, the 3rd field on (the command name, in parentheses, may hold
// spaces and parentheses of its own, so they are counted after the last
// ')'); nil when the line has no ')' or fewer than n such fields.
func statFields(stat []byte, n int) [][]byte {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < n {
		return nil
	}
	return f
}

// parseCPU reads utime and stime (the 14th and 15th fields) from a
// /proc/<pid>/stat line, counting the fields with statFields.
func parseCPU(stat []byte) time.Duration {
	f := statFields(stat, 13)
	if f == nil {
		return 0
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / ticks
}

// MinorFaults is the number of minor page faults process pid has taken so
// far (minflt, the 10th field of /proc/<pid>/stat: pages mapped again
// without reading the disk, such as a released page of its executable
// touched again); 0 when it cannot be read.
func MinorFaults(pid int) int64 {
	return parseMinorFaults(readStat(pid))
}

// parseMinorFaults reads minflt from a /proc/<pid>/stat line, counting
// the fields with statFields as parseCPU does.
func parseMinorFaults(stat []byte) int64 {
	f := statFields(stat, 8)
	if f == nil {
		return 0
	}
	n, err := strconv.ParseInt(string(f[7]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Syscalls is the number of read and write system calls process pid has
// made so far (syscr and syscw of /proc/<pid>/io); 0, 0 when they cannot
// be read.
func Syscalls(pid int) (reads, writes int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	return parseSyscalls(string(b))
}

func parseSyscalls(io string) (reads, writes int64) {
	for _, line := range strings.Split(io, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// RSS is process pid's resident set and its peak (VmRSS, VmHWM of
// /proc/<pid>/status), in bytes; 0 when they cannot be read.
func RSS(pid int) (rss, hwm int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return parseRSS(string(b))
}

func parseRSS(status string) (rss, hwm int64) {
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}
