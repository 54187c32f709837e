//go:build linux

// Command faultcost measures what a minor page fault costs on this
// machine against mapping the same pages in one madvise(MADV_POPULATE_READ)
// call: it maps a file (weft's binary, say) privately and read-only, as the
// loader maps an executable, reads every page once, then, for -rounds
// rounds, drops the mapping's pages (MADV_DONTNEED, as weft proxy's page
// release does) and reads them back one by one (counting the faults from
// getrusage), then drops them and maps them in one call.
// docs/bench/proxy.md, "Round 28: mapping the released pages back after
// idle", has its figures.
//
//	go run ./bench/faultcost -rounds 5 /path/to/weft
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	rounds := flag.Int("rounds", 5, "rounds of drop and read back")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: faultcost [-rounds N] FILE")
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		log.Fatal(err)
	}
	page := os.Getpagesize()
	n := int(st.Size()) &^ (page - 1)
	b, err := syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		log.Fatal(err)
	}
	var sum byte // read bytes are summed and printed, so the reads stay
	readAll := func() {
		for i := 0; i < n; i += page {
			sum += b[i]
		}
	}
	drop := func() {
		if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
			log.Fatal(err)
		}
	}
	readAll()
	pages := float64(n / page)
	for range *rounds {
		drop()
		var ru0, ru1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		t := time.Now()
		readAll()
		faulted := time.Since(t)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		faults := ru1.Minflt - ru0.Minflt
		drop()
		t = time.Now()
		if err := unix.Madvise(b, unix.MADV_POPULATE_READ); err != nil {
			log.Fatal("MADV_POPULATE_READ (Linux 5.14 and later): ", err)
		}
		populated := time.Since(t)
		fmt.Printf("%d MB, %d pages: read back %v in %d faults (%.1f µs a fault); one MADV_POPULATE_READ %v (%.2f µs a page)\n",
			n>>20, n/page, faulted, faults, float64(faulted.Nanoseconds())/1e3/float64(max(faults, 1)),
			populated, float64(populated.Nanoseconds())/1e3/pages)
	}
	fmt.Println("sum", sum)
}
