//go:build linux

package exepages

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"strconv"
	"strings"
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
