//go:build linux

package exepages

import (
	"bufio"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMapping(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
	}{
		{"00400000-010a5000 r-xp 00000000 103:03 42 /usr/bin/weft", true},
		{"010a5000-020c7000 r--p 00ca5000 103:03 42 /usr/bin/weft", true},
		{"020c7000-0215f000 rw-p 01cc7000 103:03 42 /usr/bin/weft", false}, // data: never
		{"7f00-8f00 r-xp 00000000 103:03 43 /usr/lib/libc.so.6", false},    // another file
		{"7f00-8f00 r--s 00000000 103:03 42 /usr/bin/weft", false},         // shared
		{"0215f000-041a9000 rw-p 00000000 00:00 0", false},                 // anonymous
		{"00400000-010a5000 r-xp 00000000 103:03 42 /path with spaces/weft", true},
	}
	for _, tc := range tests {
		_, _, ok := readOnlyMapping(tc.line, 42)
		if ok != tc.ok {
			t.Errorf("%q: %v, want %v", tc.line, ok, tc.ok)
		}
	}
}

// TestRelease: the executable's resident pages drop, and the process goes
// on running the code whose pages were released.
func TestRelease(t *testing.T) {
	before := exeRss(t)
	n, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no mapping of the executable was released")
	}
	after := exeRss(t)
	if after >= before {
		t.Errorf("resident pages of the executable: %d kB before, %d kB after", before, after)
	}
	// Still running: this code, strconv's and the testing package's
	// fault back in.
	if s := strconv.Itoa(42); s != "42" {
		t.Fatal(s)
	}
}

// exeRss sums Rss of the executable's read-only mappings in kB.
func exeRss(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if fl := strings.Fields(l); len(fl) >= 6 && strings.Contains(fl[0], "-") {
			in = strings.HasSuffix(l, exe) && (fl[1] == "r-xp" || fl[1] == "r--p")
			continue
		}
		if in && strings.HasPrefix(l, "Rss:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			total += kb
		}
	}
	return total
}

// TestReleaseBuildModes runs Release in a plain executable, which releases
// pages, and in a position-independent one, which must release none and
// go on running (discarding its relocated read-only data would crash it).
func TestReleaseBuildModes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two executables")
	}
	for _, tc := range []struct {
		mode     string
		released bool
	}{{"exe", true}, {"pie", false}} {
		t.Run(tc.mode, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "release")
			build := exec.Command("go", "build", "-buildmode="+tc.mode, "-o", bin, "./testdata/release")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build -buildmode=%s: %v\n%s", tc.mode, err, out)
			}
			out, err := exec.Command(bin).CombinedOutput()
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			f := strings.Fields(string(out))
			if len(f) != 3 || f[0] != "ok" || f[1] != "ok" {
				t.Fatalf("output %q", out)
			}
			n, _ := strconv.ParseInt(f[2], 10, 64)
			if (n > 0) != tc.released {
				t.Fatalf("released %d bytes; want some: %t", n, tc.released)
			}
		})
	}
}

// TestReleaseTables: the function tables' resident pages go, and the
// tracebacks and collections that read them go on working.
func TestReleaseTables(t *testing.T) {
	r, err := tables()
	if err != nil || r.end == r.start {
		t.Fatalf("no .gopclntab range in the test binary: %v", err)
	}
	buf := make([]byte, 1<<16)
	runtime.GC()
	runtime.Stack(buf, true) // every goroutine's frames: reads the tables
	before := residentPages(t, r)
	if before == 0 {
		t.Fatal("no page of the function tables resident after a traceback")
	}
	n, err := ReleaseTables()
	if err != nil || n != int64(r.end-r.start) {
		t.Fatalf("released %d bytes of %d: %v", n, r.end-r.start, err)
	}
	if after := residentPages(t, r); after >= before {
		t.Errorf("resident pages of the function tables: %d before, %d after", before, after)
	}
	runtime.GC()
	if s := string(buf[:runtime.Stack(buf, false)]); !strings.Contains(s, "TestReleaseTables") {
		t.Errorf("traceback after the release lacks this function:\n%s", s)
	}
}

// residentPages counts the pages of r this process has mapped, from
// /proc/self/pagemap (bit 63: present).
func residentPages(t *testing.T, r span) int {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	b := make([]byte, 8*((r.end-r.start)/page))
	if _, err := f.ReadAt(b, int64(r.start/page*8)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; i < len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:])>>63 == 1 {
			n++
		}
	}
	return n
}
