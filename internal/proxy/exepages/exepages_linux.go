//go:build linux

package exepages

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Release unmaps this process's pages of the executable's read-only
// mappings (code and read-only data) and returns the size of the address
// ranges released. Writable mappings (data, bss) are never touched:
// MADV_DONTNEED would discard their contents.
//
// A position-independent executable (-buildmode=pie, as distributions
// often build) is left alone: the loader relocates part of its read-only
// data (RELRO) in private copies of those pages before making them
// read-only, and discarding them would bring back the unrelocated bytes.
func Release() (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return 0, fmt.Errorf("stat the executable: %w", err)
	}
	if pie, err := isPIE("/proc/self/exe"); err != nil || pie {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("read mappings: %w", err)
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := readOnlyMapping(sc.Text(), st.Ino)
		if !ok {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); e != 0 {
			return total, fmt.Errorf("madvise %x-%x: %w", start, end, e)
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}

// ReleaseTables unmaps this process's pages of the executable's function
// tables (.gopclntab) and returns the size of the range released. The
// garbage collector reads them for every frame of every goroutine's
// stack, and little else does between collections (stack growth, a
// traceback, a profile), so right after a collection they are resident
// for nothing: 4.4 MB of weft's 16 MB section with h2c at 1,000
// requests/s, where collections run every 0.5-1 s and the minute's
// Release never finds them gone (docs/bench/proxy.md, "Memory: h2c and
// weft proxy with mTLS"). The next collection faults back the blocks it
// reads. Like Release, it leaves a position-independent executable alone.
func ReleaseTables() (int64, error) {
	r, err := tables()
	if err != nil || r.end == r.start {
		return 0, err
	}
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); e != 0 {
		return 0, fmt.Errorf("madvise %x-%x: %w", r.start, r.end, e)
	}
	return int64(r.end - r.start), nil
}

// span is an address range, [start, end).
type span struct{ start, end uintptr }

// tables is the page-aligned range inside the executable's .gopclntab
// (empty when it has none, or is position-independent), read once.
var tables = sync.OnceValues(func() (span, error) {
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		return span{}, fmt.Errorf("read the executable's ELF header: %w", err)
	}
	defer f.Close()
	s := f.Section(".gopclntab")
	if f.Type == elf.ET_DYN || s == nil {
		return span{}, nil
	}
	page := uint64(os.Getpagesize())
	lo := (s.Addr + page - 1) &^ (page - 1)
	hi := (s.Addr + s.Size) &^ (page - 1)
	if hi <= lo {
		return span{}, nil
	}
	return span{uintptr(lo), uintptr(hi)}, nil
})

// isPIE reports whether the executable at path is position-independent
// (ELF type ET_DYN).
func isPIE(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("read the executable's ELF header: %w", err)
	}
	defer f.Close()
	return f.Type == elf.ET_DYN, nil
}

// readOnlyMapping parses a /proc/self/maps line,
//
//	00400000-010a5000 r-xp 00000000 103:03 1234567 /usr/bin/weft
//
// and reports the range of a private mapping of inode ino that cannot be
// written.
func readOnlyMapping(line string, ino uint64) (start, end uintptr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 || (f[1] != "r-xp" && f[1] != "r--p") {
		return 0, 0, false
	}
	if n, err := strconv.ParseUint(f[4], 10, 64); err != nil || n != ino {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	s, err1 := strconv.ParseUint(lo, 16, 64)
	e, err2 := strconv.ParseUint(hi, 16, 64)
	if !found || err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
