package bolt

import (
	"context"
	"strings"

	"github.com/weftmesh/weft/internal/store"
)

// watchBuffer is how many changes a watcher may have unread before it is
// dropped and must resynchronise.
const watchBuffer = 4096

type watcher struct {
	prefix string
	ch     chan store.Change // closed under Store.mu by closeLocked
	stop   chan struct{}     // closed with ch, ends the watcher's goroutine
	closed bool
}

func (w *watcher) closeLocked() {
	if !w.closed {
		w.closed = true
		close(w.ch)
		close(w.stop)
	}
}

func filter(c store.Change, prefix string) (store.Change, bool) {
	if prefix == "" {
		return c, true
	}
	var evs []store.Event
	for _, e := range c.Events {
		if strings.HasPrefix(e.KV.Key, prefix) {
			evs = append(evs, e)
		}
	}
	return store.Change{Revision: c.Revision, Events: evs, Committed: c.Committed}, len(evs) > 0
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	if from < s.rev {
		oldest := s.rev + 1
		if len(s.history) > 0 {
			oldest = s.history[0].Revision
		}
		if from+1 < oldest {
			return nil, store.ErrCompacted
		}
	}
	w := &watcher{prefix: prefix, ch: make(chan store.Change, watchBuffer), stop: make(chan struct{})}
	for _, c := range s.history {
		if c.Revision <= from {
			continue
		}
		if fc, ok := filter(c, prefix); ok {
			if len(w.ch) == cap(w.ch) {
				return nil, store.ErrCompacted
			}
			w.ch <- fc
		}
	}
	s.watchers[w] = struct{}{}
	go func() { // ends with ctx or when the store closes the watcher
		select {
		case <-ctx.Done():
		case <-w.stop:
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		w.closeLocked()
		delete(s.watchers, w)
	}()
	return w.ch, nil
}

// publish records committed changes and hands them to watchers. A watcher
// that cannot take a change is closed: it must resynchronise.
func (s *Store) publish(rev store.Revision, changes []store.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev = rev
	s.history = append(s.history, changes...)
	// Trim in halves so that copying is amortised over many commits.
	if len(s.history) > 2*s.histSize {
		s.history = append(s.history[:0:0], s.history[len(s.history)-s.histSize:]...)
	}
	for w := range s.watchers {
		if w.closed {
			delete(s.watchers, w)
			continue
		}
		for _, c := range changes {
			fc, ok := filter(c, w.prefix)
			if !ok {
				continue
			}
			select {
			case w.ch <- fc:
			default:
				w.closeLocked()
				delete(s.watchers, w)
			}
			if w.closed {
				break
			}
		}
	}
}
