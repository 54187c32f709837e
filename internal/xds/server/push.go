package server

import (
	"crypto/rand"
	"strconv"

	mrand "math/rand/v2"
)

// Who sends a stream's pushes. A stream's protocol state and its gRPC
// stream's SendMsg are used holding its turn. When the runner publishes
// an identity's new snapshot, the fan-out (hub.deliver, on the runner's
// workers) takes the turn of each of its streams that is idle and sends
// the one response the stream owes itself: the stream's own goroutine is
// not woken, which saves a goroutine hand-off (a channel send, a select
// and a context switch) per push and stream. A stream that is busy
// (handling a request, or sending) or that still awaits an answer to a
// response is woken as before and sends from its own goroutine, so the
// fan-out never waits on one client.
//
// Why an idle stream's SendMsg cannot block: grpc-go's SendMsg waits only
// when the stream's write quota (64 KiB) is spent on bytes its connection
// has not yet framed, which happens when the client does not read or
// grants no flow-control window. A stream is idle when every response it
// was sent has been answered by a request carrying that response's nonce;
// the nonce's field is encoded after the resources (codec.go, and field
// order: DiscoveryResponse's nonce is field 5, after resources and
// type_url; DeltaDiscoveryResponse's is followed only by removed names)
// and has a random part the client cannot guess, so the answer shows
// that gRPC framed the response's bytes and gave the quota back. The first
// SendMsg then finds quota left and returns; pushNow sends only one
// response, and leaves any further one to the stream's goroutine.

// pushNow sends the next response the stream owes if the stream is idle
// (see above), on the calling goroutine. handled reports whether it did
// what the stream needed (false: the caller must wake the stream, poke),
// sent whether a response went out. A response left owed after the one
// sent is left to the stream's own goroutine, woken here. When the push
// window (window.go) is full the stream is queued instead, and handled;
// next is a stream that got the push window's slot this one did not need
// (its client holds what it would be sent): the caller pushes to it
// (window.run).
func (s *stream) pushNow(w *window) (handled, sent bool, next *stream) {
	if !s.turn.TryLock() {
		return false, false, nil
	}
	defer s.turn.Unlock()
	if s.ended || s.pushErr != nil || s.send == nil {
		return true, false, nil // the handler is returning, or will with pushErr
	}
	if !s.idle() {
		return false, false, nil
	}
	n, more, err := s.send(1)
	if err != nil {
		s.pushErr = err
		s.poke()
		return true, false, nil
	}
	if more {
		// A later type's new version may be owed too (a first snapshot,
		// a node's change): the stream's goroutine sends it.
		s.poke()
	}
	return true, n > 0, s.settle(w)
}

// pushGranted pushes to a stream the push window just gave a slot to,
// as pushNow, or wakes it when it is busy; it returns the stream the slot
// goes to next when this one needs it for nothing.
func (s *stream) pushGranted(w *window) (next *stream) {
	if !s.turn.TryLock() {
		s.poke() // its goroutine pushes, holding the slot
		return nil
	}
	defer s.turn.Unlock()
	if s.ended || s.pushErr != nil || s.send == nil {
		return w.release(s)
	}
	if !s.idle() {
		// Its request's answer went out meanwhile: it is pushed to, with
		// the slot, when the client answers it (serve), not from here,
		// where a send could wait on the client (see above).
		return nil
	}
	n, more, err := s.send(1)
	if err != nil {
		s.pushErr = err
		s.poke()
		return w.release(s)
	}
	if n > 0 {
		w.metrics.inlinePushes.Inc()
	}
	if more {
		s.poke()
	}
	return s.settle(w)
}

// owesWrite reports whether what the stream would send next is a new
// snapshot's (a write's) to an idle stream: such a push, but for one
// that closes the stream, takes a slot of the push window. Called
// holding the turn.
func (s *stream) owesWrite() bool {
	if s.is == nil {
		return false
	}
	snap := s.is.snap.Load()
	return snap != nil && snap != s.seen && snap.closeErr == nil && s.idle()
}

// settle frees the stream's slot of the push window once the stream is
// idle and owes no new snapshot's push, and returns the stream the slot
// went to, for the caller to push to once it no longer holds this
// stream's turn (window.run). A stream that owes one was woken (poke) by
// whoever made it owe: the fan-out, or the window that gave it the slot
// it keeps for that push. Called holding the turn.
func (s *stream) settle(w *window) *stream {
	if !s.idle() || s.owesWrite() {
		return nil
	}
	return w.release(s)
}

// idle reports whether every response the stream was sent has been
// answered. Called holding the turn.
func (s *stream) idle() bool {
	for t := range s.types {
		if s.types[t].awaiting {
			return false
		}
	}
	return true
}

// nextNonce numbers the stream's next response. A nonce is the response's
// number on the stream and 64 random bits: a client cannot answer a
// response it has not read (see pushNow). Called holding the turn.
func (s *stream) nextNonce() string {
	s.nonce++
	if s.nonces == nil {
		var seed [32]byte
		rand.Read(seed[:]) // never fails (crypto/rand)
		s.nonces = mrand.NewChaCha8(seed)
	}
	var b [40]byte
	n := strconv.AppendInt(b[:0], s.nonce, 10)
	n = append(n, '.')
	n = strconv.AppendUint(n, s.nonces.Uint64(), 36)
	return string(n)
}
