package server

import "github.com/weftmesh/weft/internal/store"

// Observer hears of every response a stream sends and of every ACK or
// NACK that answers one, e.g. to trace a write's way to each proxy
// (weft server's push spans). Both calls are made on the stream's
// goroutine, the stream's lock held: they must return at once and call
// nothing of the Server's. Options.Observer nil: no calls, no cost.
type Observer interface {
	Pushed(p PushInfo)
	Acked(a AckInfo)
}

// PushInfo is one response sent to a proxy.
type PushInfo struct {
	StreamID int64
	NodeID   string
	TypeURL  string
	Version  string
	Nonce    string
	// Revision is the store revision the pushed configuration reflects:
	// a write's spans find its pushes by the revision its commit gave.
	Revision store.Revision
	// Initial: the stream's first response of the type; the push
	// answers its subscription rather than a change. (A stream that
	// NACKed its first response is sent changes, and their pushes are
	// not initial.)
	Initial bool
}

// AckInfo is a proxy's answer to the response of Nonce: an ACK, or a
// NACK when Error is set (the proxy's error_detail message).
type AckInfo struct {
	StreamID int64
	NodeID   string
	TypeURL  string
	Version  string
	Nonce    string
	Error    string
}
