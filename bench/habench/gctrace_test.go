package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// gcHelperEnv makes the test binary, run again by TestGCTraceOfAProcess,
// run four forced GC cycles and exit. The test counts three: a cycle's
// trace line is written after runtime.GC has returned to its caller
// (exiting at once cut the third line short, 1 run in ~20 under load),
// and the fourth cycle cannot start before the third's line is out.
const gcHelperEnv = "HABENCH_GC_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(gcHelperEnv) == "1" {
		for range 4 {
			runtime.GC()
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A real Go process's gctrace lines, read as habench reads a replica's:
// every cycle is found, placed between the process's start and the end of
// its output, and none before the process started.
func TestGCTraceOfAProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), gcHelperEnv+"=1", "GODEBUG=gctrace=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var g gcTrace
	var lines []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		g.line(time.Now(), sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%q", err, lines)
	}
	ended := time.Now()
	if len(g.cycles) < 3 {
		t.Fatalf("%d GC cycles parsed, want at least the 3 forced ones, from %q", len(g.cycles), lines)
	}
	if n, in := g.during(started, ended); n != len(g.cycles) || in <= 0 {
		t.Errorf("during the process's life: %d cycles (%v of GC wall time), want %d and more than 0", n, in, len(g.cycles))
	}
	if n, _ := g.during(started.Add(-time.Hour), started.Add(-time.Minute)); n != 0 {
		t.Errorf("before the process started: %d cycles, want 0", n)
	}
	if g.base.Before(started.Add(-time.Second)) || g.base.After(ended) {
		t.Errorf("estimated start %v outside [%v, %v]", g.base, started, ended)
	}
}

func TestParseGCLine(t *testing.T) {
	for _, c := range []struct {
		line    string
		ok      bool
		at, dur time.Duration
	}{
		{"gc 12 @3.456s 2%: 0.018+1.2+0.003 ms clock, 0.036+0.2/1.1/0+0.006 ms cpu, 4->4->2 MB, 5 MB goal, 0 MB stacks, 0 MB globals, 2 P", true, 3456 * time.Millisecond, 1221 * time.Microsecond},
		{"gc 3 @0.100s 0%: 1+2+3 ms clock, 1+0/0/0+1 ms cpu, 1->1->0 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)", true, 100 * time.Millisecond, 6 * time.Millisecond},
		{`time=2026-12-03T19:00:00Z level=INFO msg="api listening" addr=127.0.0.1:1`, false, 0, 0},
		{"scvg: 1 MB released", false, 0, 0},
	} {
		got, ok := parseGCLine(c.line)
		if ok != c.ok || got.at != c.at || got.dur.Round(time.Microsecond) != c.dur {
			t.Errorf("parseGCLine(%q) = %+v, %v; want at %v dur %v, %v", c.line, got, ok, c.at, c.dur, c.ok)
		}
	}
}
