package proxy

import (
	"context"
	"runtime"
	"time"

	"github.com/weftmesh/weft/internal/proxy/exepages"
)

// pagesSettle is how long configuration must be quiet before the
// executable's pages are released again.
const pagesSettle = 5 * time.Second

// pagesRefresh is how often the executable's pages are released while
// nothing changes, so that the resident ones are what the proxy touched in
// the last interval. Between configuration updates, code that runs once
// or rarely stays resident otherwise: a TLS handshake's (certificate
// parsing and verification), an xDS reconnect's decoding, an admin
// request's, a profile's symbolisation. At 1,000 requests/s weft proxy's
// working set of the binary is 3-6 MB; rare events had left 10-16 MB
// resident (docs/bench/proxy.md, "Memory per proxy, broken down").
// A release costs the pages touched again, one minor fault per 64 KiB
// block: about a hundred faults a minute, measured there.
const pagesRefresh = time.Minute

// releasePages runs pageSchedule with exepages.Release, and releases the
// function tables after every collection (exepages.ReleaseTables). It
// returns when ctx ends.
func (p *Proxy) releasePages(ctx context.Context) {
	afterCollections(ctx, func() bool {
		if _, err := exepages.ReleaseTables(); err != nil {
			p.log.Warn("release the executable's function tables", "err", err)
			return false
		}
		return true
	})
	pageSchedule(ctx, p.liveCh, p.changed, pagesSettle, pagesRefresh, func() {
		n, err := exepages.Release()
		if err != nil {
			p.log.Warn("release the executable's resident pages", "err", err)
			return
		}
		p.log.Debug("released the executable's resident pages", "bytes", n)
	})
}

// pageSchedule calls release once live is closed and changes have been
// quiet for settle, again settle after each later burst of changes, and
// every refresh in between: start-up and building configuration touch
// code and descriptors that serving traffic does not, and so do rare
// events (see pagesRefresh). It returns when ctx ends.
func pageSchedule(ctx context.Context, live <-chan struct{}, changes <-chan struct{}, settle, refresh time.Duration, release func()) {
	select {
	case <-live:
	case <-ctx.Done():
		return
	}
	t := time.NewTimer(settle)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
			t.Reset(settle)
		case <-t.C:
			release()
			t.Reset(refresh)
		}
	}
}

// gcSentinel is an object no one references, so that the next collection
// finds it; its pointer keeps it out of the tiny allocator, whose blocks
// hold several objects and are freed only when all of them are.
type gcSentinel struct {
	_ *gcSentinel
	_ [8]byte
}

// afterCollections calls f on the runtime's cleanup goroutine after each
// garbage collection, until ctx ends or f returns false: each call arms
// the next by allocating a sentinel for the following collection to find.
// f must be quick: cleanups run one at a time.
func afterCollections(ctx context.Context, f func() bool) {
	var arm func()
	arm = func() {
		runtime.AddCleanup(new(gcSentinel), func(struct{}) {
			if ctx.Err() == nil && f() {
				arm()
			}
		}, struct{}{})
	}
	arm()
}
