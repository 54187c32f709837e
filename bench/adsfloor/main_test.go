package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

// TestMain lets run start this test binary as the server child, as it
// starts the adsfloor binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestRunModes: every mode serves its streams, each push reaches every
// stream and every ACK comes back with its version and nonce (run fails
// on any other request), and a row is reported.
func TestRunModes(t *testing.T) {
	for mode := range grpcModes {
		t.Run(mode, func(t *testing.T) { runMode(t, mode) })
	}
	t.Run("h2", func(t *testing.T) { runMode(t, "h2") })
	t.Run("tcp", func(t *testing.T) { runMode(t, "tcp") })
	t.Run("tcp-handoff", func(t *testing.T) { runMode(t, "tcp-handoff") })
}

func runMode(t *testing.T, mode string) {
	row, err := run(mode, 20, 3, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(row, "| "+mode+" | 20 |") {
		t.Fatalf("row %q", row)
	}
}

// TestSelfCPU: getrusage's CPU time grows as this process computes, as
// /proc/<pid>/stat's does.
func TestSelfCPU(t *testing.T) {
	c0, p0 := selfCPU(), procstat.CPU(os.Getpid())
	deadline := time.Now().Add(20 * time.Second)
	x := 0
	for selfCPU()-c0 < 200*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("selfCPU went from %v to %v in 20 s of computing", c0, selfCPU())
		}
		x++
	}
	if p := procstat.CPU(os.Getpid()) - p0; p < 150*time.Millisecond {
		t.Errorf("selfCPU counted 200 ms, /proc/<pid>/stat %v (%d loops)", p, x)
	}
}
