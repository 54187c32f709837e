package accesslog

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Writing: a line is appended to its sink's buffer, under the sink's lock,
// by whoever finished the request (a request's goroutine, an event loop);
// one writer goroutine per sink writes the buffer out. No request waits
// for a file, a pipe or a terminal: a sink that stalls costs lines, never
// a request or a loop.
//
// Envoy's file access logs (the stdout and stderr loggers are files too)
// buffer the same way: lines go to a flush buffer that a thread per file
// writes when it passes file_flush_min_size_kb (64 KB) or every
// file_flush_interval (10 s), at exit too. Envoy's buffer has no bound; a
// sink's here has one (Buffering.MaxBuffered), and a line that does not
// fit is dropped and counted in filesystem.write_dropped. The counters are
// Envoy's file access log stats (filesystem.*).

// Buffering is how the sinks buffer; the zero value means the defaults.
type Buffering struct {
	// FlushInterval is the longest a line waits in the buffer; 0 means
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// FlushSize wakes the writer before the interval; 0 means
	// DefaultFlushSize.
	FlushSize int
	// MaxBuffered bounds the bytes a sink holds that its writer has not
	// taken; a line that would pass it is dropped. 0 means
	// DefaultMaxBuffered.
	MaxBuffered int
}

// Defaults of Buffering.
const (
	// DefaultFlushInterval is shorter than Envoy's 10 s: a sidecar's
	// lines are read live (docker logs, kubectl logs), and at a second
	// the writer still batches hundreds of lines per write at the rates
	// where batching matters.
	DefaultFlushInterval = time.Second
	DefaultFlushSize     = 64 << 10 // Envoy's file_flush_min_size_kb
	// DefaultMaxBuffered is about 20,000 lines of Envoy's default
	// format: a second of 20,000 requests/s with the sink stalled.
	DefaultMaxBuffered = 4 << 20
)

// closeWait bounds how long Close waits for a writer to write what is
// left: a sink stuck in a write (a pipe nobody reads) must not stop the
// proxy's exit.
const closeWait = 5 * time.Second

// sinkStats are Envoy's file access log stats, shared by every sink.
type sinkStats struct {
	buffered, completed, failed, byTimer, dropped *stats.Counter
	total                                         *stats.Gauge // bytes held by all sinks, not yet written
}

func newSinkStats(st *stats.Store) *sinkStats {
	if st == nil {
		st = stats.NewStore()
	}
	sc := st.Scope("filesystem.", "envoy_filesystem_")
	return &sinkStats{buffered: sc.Counter("write_buffered"), completed: sc.Counter("write_completed"),
		failed: sc.Counter("write_failed"), byTimer: sc.Counter("flushed_by_timer"),
		dropped: sc.Counter("write_dropped"), total: sc.Gauge("write_total_buffered")}
}

// sink is one open file shared by every logger writing to its path, and
// its writer goroutine.
type sink struct {
	f    *os.File // written only by the writer goroutine, closed after it ends
	own  bool     // opened by Sinks, so closed by it
	path string
	st   *sinkStats
	b    Buffering

	mu     sync.Mutex
	buf    []byte // lines the writer has not taken; protected by mu
	closed bool   // protected by mu: lines are dropped from then on

	wake  chan struct{} // cap 1: buf passed FlushSize; written by write
	stop  chan struct{} // closed by close: write what is left and end
	ended chan struct{} // closed by the writer when it has ended
}

func newSink(f *os.File, own bool, path string, st *sinkStats, b Buffering) *sink {
	s := &sink{f: f, own: own, path: path, st: st, b: b,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), ended: make(chan struct{})}
	go s.run() // ends when close closes stop, after the last write
	return s
}

// write appends one or more whole lines, or drops them when the buffer
// is full. It never waits for the file.
func (s *sink) write(b []byte) {
	s.mu.Lock()
	if s.closed || len(s.buf)+len(b) > s.b.MaxBuffered {
		s.mu.Unlock()
		s.st.dropped.Inc()
		return
	}
	s.buf = append(s.buf, b...)
	n := len(s.buf)
	// Counted before the writer can take the line (and subtract it).
	s.st.buffered.Inc()
	s.st.total.Add(int64(len(b)))
	s.mu.Unlock()
	if n >= s.b.FlushSize {
		select {
		case s.wake <- struct{}{}:
		default: // already woken
		}
	}
}

// run is the writer: it takes the buffer on a wake-up, on the interval,
// and once more when stopped.
func (s *sink) run() {
	defer close(s.ended)
	t := time.NewTicker(s.b.FlushInterval)
	defer t.Stop()
	var spare []byte // the buffer last written, reused
	for {
		select {
		case <-s.wake:
			spare = s.flush(spare)
		case <-t.C:
			if s.pending() == 0 {
				continue
			}
			s.st.byTimer.Inc()
			spare = s.flush(spare)
		case <-s.stop:
			s.flush(spare)
			return
		}
	}
}

func (s *sink) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf)
}

// flush swaps the buffer with spare and writes it: one write for every
// line taken, in the order they were appended. It returns the buffer
// written, emptied, for the next swap (dropped when a stall grew it past
// four flushes, so that a stall does not keep its memory).
func (s *sink) flush(spare []byte) []byte {
	s.mu.Lock()
	b := s.buf
	s.buf = spare[:0]
	s.mu.Unlock()
	if len(b) == 0 {
		return b
	}
	if _, err := s.f.Write(b); err != nil {
		s.st.failed.Inc()
	} else {
		s.st.completed.Inc()
	}
	s.st.total.Add(-int64(len(b)))
	if cap(b) > 4*s.b.FlushSize {
		return nil
	}
	return b[:0]
}

// stopTaking makes the sink drop lines from now on and tells the writer
// to write the rest and end; once only.
func (s *sink) stopTaking() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
}

// wait waits for the writer to end, until deadline, then closes the file
// if the sink opened it.
func (s *sink) wait(deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-s.ended:
	case <-t.C:
		// The writer is stuck in a write; it ends when the write
		// returns. The file stays open for it.
		return fmt.Errorf("close access log %s: the last lines were not written in %v", s.path, closeWait)
	}
	if s.own {
		if err := s.f.Close(); err != nil {
			return fmt.Errorf("close access log %s: %w", s.path, err)
		}
	}
	return nil
}
