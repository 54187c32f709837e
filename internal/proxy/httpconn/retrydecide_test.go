package httpconn

import (
	"io"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// readUnderWay is a replayBody of one attempt (first) that has read
// size bytes of its source, the write end of which the test holds (src),
// and whose transport is in a further read of 4 KiB: its result comes
// on done once the test writes to src.
type readUnderWay struct {
	b         *replayBody
	first     *replayReader
	src       *io.PipeWriter
	abandoned *stats.Counter
	done      chan readResult
}

type readResult struct {
	n   int
	err error
}

// enteredReader tells on entered (one slot, never blocking) each time
// a Read of r begins.
type enteredReader struct {
	r       io.Reader
	entered chan struct{}
}

func (e *enteredReader) Read(p []byte) (int, error) {
	select {
	case e.entered <- struct{}{}:
	default:
	}
	return e.r.Read(p)
}

// startReadUnderWay sets up a readUnderWay whose first attempt has read
// size bytes of testBody.
func startReadUnderWay(t *testing.T, size int) *readUnderWay {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.Close() })
	u := &readUnderWay{src: pw, done: make(chan readResult, 1),
		abandoned: stats.NewStore().Scope("cluster.c.", "envoy_cluster_").Counter("retry_or_shadow_abandoned")}
	src := &enteredReader{r: pr, entered: make(chan struct{}, 1)}
	u.b = &replayBody{src: io.NopCloser(src), abandoned: u.abandoned}
	u.first = u.b.next()
	go func() { _, _ = pw.Write(testBody(size)) }() // ends once read, or at pw.Close
	if n, err := io.ReadFull(u.first, make([]byte, size)); n != size {
		t.Fatalf("the first attempt read %d of %d bytes (%v)", n, size, err)
	}
	select {
	case <-src.entered: // those reads'
	default:
	}
	go func() { // ends when src is written to or closed
		n, err := u.first.Read(make([]byte, 4<<10))
		u.done <- readResult{n, err}
	}()
	// Until that read is in the source's Read: past the replayBody's
	// locks but readMu, which it holds.
	select {
	case <-src.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first attempt's further read did not reach its source (10 s)")
	}
	return u
}

// TestReplayBodyDecideAtOneInstant: the goroutine path's retry verdict
// (takeRetry's replayBody.decide, by route.DecideRetry) is taken on the
// body's state at one instant, as the loops take theirs on their one
// thread (retryTake) and Envoy's router on its own (Filter::decodeData
// drops the retry state of a body past its buffer before or after
// RetryStateImpl::shouldRetry, never during): a read of the body that
// completes while the cluster's budget (max_retries) is asked is ordered
// after the verdict. With the budget spent, the attempt is flagged UO
// (RetryNoBudget) and its request, whose retry state ends with that
// answer, is not counted in retry_or_shadow_abandoned when that read
// takes the body past route.MaxRetryBuffer. Until round 36 takeRetry
// read the body's state, asked the budget, then gave the attempt up, each
// apart: such a read was counted abandoned after the attempt was flagged
// UO, a pair that neither the loops nor Envoy give (each gives no flag
// and the count, or the flag and no count). A body outgrown before the
// verdict is not retried, the budget not asked (RetryBodyGone: nothing
// flagged, the request counted once). The window is not reached end to
// end on the loops, which have none (one thread), nor on the goroutine
// path deterministically: hence a unit test.
func TestReplayBodyDecideAtOneInstant(t *testing.T) {
	const within = route.MaxRetryBuffer - 10 // kept before the read under way
	t.Run("outgrows while the budget is asked", func(t *testing.T) {
		u := startReadUnderWay(t, within)
		v := u.b.decide(0, 1, func() bool {
			// The read under way gets bytes that take the body past the
			// bound, while the budget is asked.
			if _, err := u.src.Write(testBody(100)); err != nil {
				t.Fatal(err)
			}
			return false // the cluster's max_retries spent
		})
		if got := <-u.done; got.n != 100 {
			t.Fatalf("the read under way got %d bytes (%v), want 100", got.n, got.err)
		}
		if v != route.RetryNoBudget {
			t.Fatalf("verdict %v, want RetryNoBudget (%v)", v, route.RetryNoBudget)
		}
		if n := u.abandoned.Value(); n != 0 {
			t.Errorf("retry_or_shadow_abandoned %d after the attempt was flagged UO; want 0 (the retry state ended with the verdict)", n)
		}
		if n := kept(u.b); n != 0 {
			t.Errorf("%d bytes kept after the verdict ended the retries; want none", n)
		}
	})
	t.Run("outgrown before", func(t *testing.T) {
		u := startReadUnderWay(t, within)
		if _, err := u.src.Write(testBody(100)); err != nil {
			t.Fatal(err)
		}
		if got := <-u.done; got.n != 100 {
			t.Fatalf("the read under way got %d bytes (%v), want 100", got.n, got.err)
		}
		v := u.b.decide(0, 1, func() bool {
			t.Error("the budget was asked for a body outgrown")
			return false
		})
		if v != route.RetryBodyGone {
			t.Fatalf("verdict %v, want RetryBodyGone (%v)", v, route.RetryBodyGone)
		}
		if n := u.abandoned.Value(); n != 1 {
			t.Errorf("retry_or_shadow_abandoned %d; want 1", n)
		}
	})
}
