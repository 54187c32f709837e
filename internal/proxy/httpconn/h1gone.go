package httpconn

import (
	"errors"
	"time"
)

// Noticing an HTTP/1.1 client that leaves while its request waits for
// the upstream's answer. The fast path reads nothing from a connection
// while its handler waits (net/http's server reads one byte in the
// background for that, per request), so a client's FIN or reset went
// unseen until the response was written: the upstream held the request,
// its connection and a max_connections slot until it answered or the
// route timeout (none on some routes). Envoy's connection manager sees
// the close at once (RemoteClose) and resets the upstream request; the
// loops see it too (evloop's clientGone).
//
// Here a request that waits longer than watchAfter has its connection
// watched: a goroutine peeks one byte through the connection's read
// buffer, so a byte that comes (a pipelined request) stays there for the
// next request, and a TLS record read in part stays in crypto/tls's
// buffer (a timeout does not break a tls.Conn). An error but the stop's
// timeout is the client gone: the connection's context ends with
// errClientGone, which cancels the stream (the upstream request is
// reset: its connection closed, or its HTTP/2 stream reset) and closes
// the connection. The watch stops before the response head is written,
// before a hijack, and when the handler returns; it never runs while the
// request's body is still being read (that read fails if the client goes).
//
// Why after watchAfter, not at once as net/http: a watch costs a
// goroutine, a read that finds nothing (EAGAIN, then the poller), the
// stop's deadline and wake-up, and 3 allocations (112 B), about 6 us a
// request on this 2-core machine (a start and stop on loopback, -cpu 1).
// Measured on the goroutine path in the same run (BenchmarkHTTPOneHop,
// WEFT_PROXY_TEST_EVLOOP=0, -test.cpu 1, binaries interleaved): before,
// 168 allocs and 12,687 B a request; with a watch started with every
// request 171 and 12,799; started by the route timer already armed
// (first due at watchAfter, then re-armed for the rest of the timeout:
// stream.routeFired) 168 and 12,687, as before. The whole process's CPU
// a request (client and backend included) was 95-150 us in either case,
// the machine's other load swamping a few percent, so the watch's own
// 6 us is what decided: some 5 % of all of it, more of the proxy's share.
// A request answered within watchAfter costs nothing more; a route
// without a timeout arms a timer of its own. A client that leaves within
// watchAfter is noticed at watchAfter; one that leaves later, at once.
const watchAfter = time.Second

// errClientGone is the cause a fast-path connection's context ends with
// when its client closed or reset it while a request waited.
var errClientGone = errors.New("the client closed its connection")

// The watch's states; stopGone's swap to goneOff decides who owns a
// running watcher's end.
const (
	goneOff     int32 = iota // no request waits, or its response began
	goneArmed                // a request waits: startGone may start the watcher
	goneRunning              // the watcher runs
)

// armGone makes the request just read watchable until stopGone; body is
// its body (nil when none), watched only once read to its end.
func (hc *h1Conn) armGone(body *h1Body) {
	hc.goneBody.Store(body)
	hc.goneState.Store(goneArmed)
}

// startGone starts watching the connection for the client's end, if its
// request is still waiting and its body was read whole. Any goroutine
// may call it (the stream's timer does).
func (hc *h1Conn) startGone() {
	if b := hc.goneBody.Load(); b != nil && !b.readWhole() {
		return
	}
	if hc.goneState.Load() != goneArmed {
		return
	}
	if hc.goneDone == nil {
		// Made once per connection, by the goroutine that starts its
		// first watch, before the state says it runs: stopGone, which
		// receives from it only once it saw goneRunning, then finds it
		// made (made after, stopGone could read it nil and wait for
		// good). The starters of a connection's watches are ordered: a
		// stream's timer starts one only while the stream is on, under
		// its abortMu (stream.watchClient), and the next stream starts
		// after that one ended (stream.ended takes the lock).
		hc.goneDone = make(chan struct{}, 1)
	}
	if !hc.goneState.CompareAndSwap(goneArmed, goneRunning) {
		return
	}
	go hc.watchGone() // ends when a byte comes, the client goes, or stopGone aborts the read
}

// watchGone peeks at the connection until something comes.
func (hc *h1Conn) watchGone() {
	_, err := hc.br.Peek(1)
	if err != nil && !isTimeout(err) {
		// EOF, a reset, a TLS close_notify: the client left. (A timeout
		// is stopGone's.)
		hc.leave(errClientGone)
	}
	hc.goneDone <- struct{}{}
}

// stopGone ends the request's watch, waiting for a running watcher's
// end: the read buffer and the connection's reads are the handler's
// again. Called on the handler's goroutine.
func (hc *h1Conn) stopGone() {
	if hc.goneState.Swap(goneOff) != goneRunning {
		return
	}
	_ = hc.c.SetReadDeadline(aLongTimeAgo)
	<-hc.goneDone
	_ = hc.c.SetReadDeadline(time.Time{})
}

// watchGone is startGone for the stream (stream.watchClient).
func (w *h1Writer) watchGone() { w.hc.startGone() }
