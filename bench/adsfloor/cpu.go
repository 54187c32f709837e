package main

import (
	"syscall"
	"time"
)

// selfCPU is the user and system CPU time this process has used so far,
// from getrusage(2) (microseconds, where /proc/<pid>/stat counts 10 ms
// ticks): each child reports its own with every round, so that its CPU
// per push is not rounded to ticks.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
