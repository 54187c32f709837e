package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseCPU(t *testing.T) {
	for _, c := range []struct {
		line string
		want time.Duration
	}{
		{"4242 (weft) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 9 0 100 0 0", 3800 * time.Millisecond},
		{"7 (a) b) (c d) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0", 30 * time.Millisecond},
		{"7 (short) R 1 7", 0},
		{"no parenthesis", 0},
		{"7 (x) R 1 7 7 0 -1 0 0 0 0 0 nan 2 0 0", 0},
	} {
		if got := parseCPU([]byte(c.line)); got != c.want {
			t.Errorf("parseCPU(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}

func TestParseMinorFaults(t *testing.T) {
	for _, c := range []struct {
		line string
		want int64
	}{
		{"4242 (weft) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 9 0 100 0 0", 900},
		{"7 (a) b) (c d) R 1 7 7 0 -1 0 31 0 0 0 1 2 0 0 20 0 1 0 5 0 0", 31},
		{"7 (short) R 1 7", 0},
		{"no parenthesis", 0},
		{"7 (x) R 1 7 7 0 -1 0 nan 0", 0},
	} {
		if got := parseMinorFaults([]byte(c.line)); got != c.want {
			t.Errorf("parseMinorFaults(%q) = %d, want %d", c.line, got, c.want)
		}
	}
}

// TestCPUOfThisProcess: the time read grows while this process computes.
func TestCPUOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/<pid>/stat is Linux's") // CI runs Linux
	}
	// Computes until the time read has grown by 100 ms: on a loaded
	// machine 300 ms of wall time may give this process less than that,
	// so the deadline only bounds a time that never grows.
	before := CPU(os.Getpid())
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	for CPU(os.Getpid())-before < 100*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("CPU went from %v to %v over 30 s of computing (%d loops)", before, CPU(os.Getpid()), x)
		}
		for range 1_000_000 {
			x++
		}
	}
	if CPU(-1) != 0 {
		t.Error("CPU of no process is not 0")
	}
}

func TestParseSyscalls(t *testing.T) {
	for _, c := range []struct {
		io   string
		r, w int64
	}{
		{"rchar: 10\nwchar: 20\nsyscr: 7\nsyscw: 3\nread_bytes: 0\n", 7, 3},
		{"syscw: 12\n", 0, 12},
		{"", 0, 0},
		{"syscr: x\nsyscw: 5", 0, 5},
	} {
		if r, w := parseSyscalls(c.io); r != c.r || w != c.w {
			t.Errorf("parseSyscalls(%q) = %d, %d, want %d, %d", c.io, r, w, c.r, c.w)
		}
	}
}

func TestParseRSS(t *testing.T) {
	rss, hwm := parseRSS("Name:\tweft\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
	if rss != 1<<20 || hwm != 2<<20 {
		t.Errorf("parseRSS = %d, %d, want %d, %d", rss, hwm, 1<<20, 2<<20)
	}
	if rss, hwm := parseRSS(""); rss != 0 || hwm != 0 {
		t.Errorf("parseRSS of nothing = %d, %d", rss, hwm)
	}
}
