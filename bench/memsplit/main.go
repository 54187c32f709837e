//go:build linux

// Command memsplit prints where processes' resident memory is: RSS split
// into anonymous and file-backed pages (smaps_rollup), PSS, threads, and
// the resident part of each ELF section of the process's executable,
// counted page by page from /proc/PID/pagemap. docs/bench/proxy.md,
// "Round 32: where the all-in-one binary's RSS goes", has its figures.
//
//	memsplit LABEL=PID ...
//
// It reads nothing from the processes themselves: an admin request
// (/memory, a profile) runs code and reads type data that then stay
// resident, and would be counted.
package main

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"strings"
	"time"
)

// sections are the executable's sections reported, in the order the
// linker lays them out.
var sections = []string{".text", ".rodata", ".typelink", ".itablink", ".gopclntab", ".noptrdata", ".data", ".bss", ".noptrbss"}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: memsplit LABEL=PID ...")
	}
	fmt.Printf("# %s UTC; MB; a section's column is resident/size\n", time.Now().UTC().Format("15:04:05"))
	fmt.Printf("%-28s %6s %6s %6s %6s %4s", "process", "rss", "anon", "file", "pss", "thr")
	for _, s := range sections {
		fmt.Printf(" %11s", s)
	}
	fmt.Println()
	for _, a := range os.Args[1:] {
		label, pidS, _ := strings.Cut(a, "=")
		pid, err := strconv.Atoi(pidS)
		if err != nil {
			log.Fatalf("%q: want LABEL=PID", a)
		}
		r := fields(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Rss", "Pss", "Anonymous")
		st := fields(fmt.Sprintf("/proc/%d/status", pid), "Threads")
		fmt.Printf("%-28s %6.2f %6.2f %6.2f %6.2f %4d", label, mb(r["Rss"]<<10), mb(r["Anonymous"]<<10), mb((r["Rss"]-r["Anonymous"])<<10), mb(r["Pss"]<<10), st["Threads"])
		f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			fmt.Printf(" %v\n", err)
			continue
		}
		for _, name := range sections {
			s := f.Section(name)
			if s == nil {
				fmt.Printf(" %11s", "-")
				continue
			}
			fmt.Printf(" %5.2f/%-5.1f", mb(resident(pid, s.Addr, s.Addr+s.Size)), mb(int64(s.Size)))
		}
		f.Close()
		fmt.Println()
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// fields reads the kB (or count) values of keys from a /proc file of
// "Key: value" lines.
func fields(path string, keys ...string) map[string]int64 {
	b, _ := os.ReadFile(path)
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		for _, k := range keys {
			if f[0] == k+":" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				m[k] += v
			}
		}
	}
	return m
}

// resident is the bytes of [start, end) the process has mapped: pagemap
// has one 64-bit entry per page, bit 63 set when it is present. It
// needs the right to ptrace the process (root, or the same user).
func resident(pid int, start, end uint64) int64 {
	const page = 4096
	start &^= page - 1
	end = (end + page - 1) &^ (page - 1)
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	b := make([]byte, 8*((end-start)/page))
	if _, err := f.ReadAt(b, int64(start/page*8)); err != nil && err != io.EOF {
		return -1
	}
	var n int64
	for i := 0; i < len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:])>>63 == 1 {
			n += page
		}
	}
	return n
}
