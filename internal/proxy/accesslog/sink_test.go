package accesslog

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// lineLogger is a Logger of "%CONNECTION_ID% <pad>\n" on path: the
// connection ID carries a line's sequence number.
func lineLogger(t *testing.T, s *Sinks, path string, pad int) *Logger {
	t.Helper()
	f, err := CompileText("%CONNECTION_ID% "+string(bytes.Repeat([]byte("x"), pad))+"\n", false)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.open(path)
	if err != nil {
		t.Fatal(err)
	}
	return &Logger{f: f, sink: k}
}

// inOrder reads lines "<n> x..." and checks that their numbers
// increase; it returns how many there were.
func inOrder(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	n, last := 0, int64(-1)
	for sc.Scan() {
		id, _, _ := bytes.Cut(sc.Bytes(), []byte(" "))
		v, err := strconv.ParseInt(string(id), 10, 64)
		if err != nil || v <= last {
			return n, fmt.Errorf("line %d: %q after %d: not whole or out of order", n, sc.Text(), last)
		}
		last = v
		n++
	}
	return n, sc.Err()
}

// TestSinksCloseWritesEverything: lines buffered for the writer are all
// in the file, in order, once Close returns, though neither the size nor
// the interval flushed them.
func TestSinksCloseWritesEverything(t *testing.T) {
	st := stats.NewStore()
	s := NewSinks(Buffering{FlushInterval: time.Hour, FlushSize: 1 << 30}, st)
	path := filepath.Join(t.TempDir(), "access.log")
	l := lineLogger(t, s, path, 40)
	const lines = 5000
	for i := range lines {
		l.Log(&Entry{ConnectionID: uint64(i + 1)})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := inOrder(f); err != nil || n != lines {
		t.Fatalf("%d lines in the file (%v), want %d", n, err, lines)
	}
	if v, _ := st.Value("filesystem.write_dropped"); v != 0 {
		t.Fatalf("write_dropped = %d", v)
	}
	if v, _ := st.Value("filesystem.write_total_buffered"); v != 0 {
		t.Fatalf("write_total_buffered = %d after Close", v)
	}
	// A log configured while the proxy stops gets no writer that
	// nothing would stop.
	if _, err := s.open(filepath.Join(t.TempDir(), "late.log")); err == nil {
		t.Fatal("a sink opened after Close")
	}
}

// TestSinkStalledDropsAndCounts: a sink that is a pipe nobody reads takes
// lines without blocking the caller until its bound, then drops and
// counts them; once the pipe is read, what was kept arrives whole and in
// order, and kept + dropped is every line.
func TestSinkStalledDropsAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// The reader end, open (so that the sink's open does not wait for
	// one) and not read: the pipe fills.
	rfd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	s := NewSinks(Buffering{FlushSize: 1 << 10, MaxBuffered: 16 << 10, FlushInterval: 10 * time.Millisecond}, st)
	l := lineLogger(t, s, path, 200)
	// 1,000 lines of 205 bytes: three times the pipe's 64 KB and the
	// sink's 16 KB. The loop ends only because Log does not wait.
	const lines = 1000
	for i := range lines {
		l.Log(&Entry{ConnectionID: uint64(i + 1)})
	}
	dropped, _ := st.Value("filesystem.write_dropped")
	if dropped == 0 {
		t.Fatal("write_dropped = 0 with the pipe full")
	}
	if err := syscall.SetNonblock(rfd, false); err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(rfd), path)
	defer r.Close()
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	go func() { n, err := inOrder(r); got <- result{n, err} }() // ends at EOF: Close closes the writer end
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	kept := res.n
	if kept+int(dropped) != lines {
		t.Fatalf("%d lines read + %d dropped, want %d", kept, dropped, lines)
	}
	if buffered, _ := st.Value("filesystem.write_buffered"); buffered != int64(kept) {
		t.Fatalf("write_buffered %d, %d lines read", buffered, kept)
	}
}
