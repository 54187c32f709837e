package main

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

// signalProfile sends the server sig, which makes it write its profile
// to -memprofile's name with suffix, and with -memprofile waits until the
// whole profile is written (writeAllocs renames it into place), at most
// 10 seconds: its forced collection and its writing fall outside the
// figures measured after.
func signalProfile(ctx context.Context, pid int, sig syscall.Signal, suffix string) {
	if proxiesProfile != "" {
		os.Remove(proxiesProfile + suffix)
	}
	syscall.Kill(pid, sig)
	if proxiesProfile == "" {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(proxiesProfile + suffix); err == nil {
			return
		}
	}
}

// proxiesProfile is -memprofile, for selfHeap.
var proxiesProfile string

// selfHeap writes the simulated proxies' allocation profile to
// -memprofile's name with suffix, if it is set.
func selfHeap(suffix string) {
	if proxiesProfile == "" {
		return
	}
	writeAllocs(proxiesProfile + suffix)
}

// writeAllocs collects, then writes this process's allocation profile to
// name (the profile is as of the last collection), through a temporary
// file renamed when complete: signalProfile waits for name.
func writeAllocs(name string) {
	runtime.GC()
	f, err := os.Create(name + ".tmp")
	if err != nil {
		return
	}
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	if cerr := f.Close(); err == nil && cerr == nil {
		os.Rename(name+".tmp", name)
	}
}
