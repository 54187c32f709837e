// Package store is weft's durable key-value state: every App Mesh and Cloud
// Map resource lives here, versioned by a store-wide revision, and every
// committed change is published to watchers in revision order.
//
// Data flows one way: the API writes through Update, the xDS server and the
// DNS server read a snapshot and then follow Watch. Implementations: bolt
// (embedded, the default) and etcd (several weft replicas on one etcd
// cluster); storetest holds the suite both must pass.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Revision is the store's logical clock. It increases with every committed
// transaction that changed something (by exactly one when nothing else
// writes to the backing store; on etcd, revisions are etcd's and other
// clients of the cluster also advance them); zero means "nothing yet".
type Revision int64

// KV is one stored key. Value must not be modified by the receiver: it may be
// shared with other readers.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision Revision // revision that created the key
	ModRevision    Revision // revision that last wrote it
}

// EventType says what happened to a key.
type EventType uint8

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is one key change. For a delete, KV holds the value the key had
// before it was deleted and ModRevision is the deleting revision.
type Event struct {
	Type EventType
	KV   KV
}

// Change is everything one committed transaction did.
type Change struct {
	Revision Revision
	Events   []Event
	// Committed is when the transaction became durable; consumers measure
	// how long their reaction to a write took from it. Zero when unknown.
	Committed time.Time
}

// Reader is what a transaction reads, at its snapshot and with its own
// writes.
type Reader interface {
	// Get returns the key, or ok=false when it does not exist.
	Get(key string) (kv KV, ok bool, err error)
	// List returns up to limit keys with the prefix that sort after the key
	// after ("" for the start), in key order. limit <= 0 means no limit.
	List(prefix, after string, limit int) ([]KV, error)
	// Count returns the number of keys with the prefix.
	Count(prefix string) (int, error)
}

// Tx is a transaction's view of the store. Reads see the transaction's own
// writes. An Update commits only if nothing its reads returned has
// changed since its snapshot, so that its writes are decided on what is
// still true when they land. A Tx must not be used after its function
// returns.
type Tx interface {
	Reader
	// Put creates or replaces a key.
	Put(key string, value []byte) error
	// Delete removes a key; deleting a missing key is not an error.
	Delete(key string) error
	// Unguarded reads the same snapshot, with the transaction's own
	// writes, but the commit does not depend on what it returns: a
	// concurrent write to those keys does not make Update run fn again,
	// so the transaction may commit on reads that are out of date by the
	// writes committed between its snapshot and its commit. It is for a
	// bound that concurrent writers may pass together, where guarded
	// reads of everything the bound covers would make each writer
	// conflict with all the others (a Cloud Map namespace's instances,
	// an App Mesh mesh's virtual nodes).
	// The Reader must not be used after the Tx; in a View it reads as
	// the Tx does.
	Unguarded() Reader
}

// Store is a durable, revisioned key-value store.
type Store interface {
	// View runs fn on a consistent read-only snapshot and returns the
	// revision it saw. Writes in fn fail with ErrReadOnly.
	View(ctx context.Context, fn func(Tx) error) (Revision, error)

	// Update runs fn in a read-write transaction and commits its writes
	// atomically and durably before returning the new revision. If fn
	// returns an error nothing is written and that error is returned as is.
	// fn may be called more than once (an implementation may retry it on
	// a conflict), so it must not have effects outside the Tx. A
	// transaction that writes nothing returns the current revision.
	Update(ctx context.Context, fn func(Tx) error) (Revision, error)

	// Watch delivers every change with a revision greater than from whose
	// keys have the prefix, in revision order; each Change holds only the
	// matching events. It fails with ErrCompacted when history before from
	// is gone: the caller must read a snapshot with View and watch from its
	// revision. The channel is closed when ctx ends, when the store
	// closes, or when the receiver falls too far behind; the receiver then
	// resynchronises the same way.
	Watch(ctx context.Context, prefix string, from Revision) (<-chan Change, error)

	// Ping tells whether the store can serve a consistent read now: nil,
	// or an error wrapping ErrUnavailable (etcd without a quorum this
	// replica reaches) or ErrClosed. It is part of Store, not an optional
	// interface, so that a wrapper embedding a Store (tracing, metrics)
	// keeps it: a type assertion on the wrapper would miss it and make an
	// unreachable store look healthy.
	Ping(ctx context.Context) error

	// Close releases the store. Pending Update calls fail with ErrClosed.
	Close() error
}

// Errors an implementation returns.
var (
	ErrCompacted = errors.New("store: revision compacted")
	ErrClosed    = errors.New("store: closed")
	ErrReadOnly  = errors.New("store: write in a read-only transaction")
	// ErrUnavailable wraps errors of a store that cannot be reached now
	// (etcd lost its quorum or cannot be dialled); the API answers them
	// with 503. Whether a write that failed so was committed is unknown.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrConflict is returned when an optimistic transaction kept
	// conflicting with concurrent writes for all its retries.
	ErrConflict = errors.New("store: too many conflicting concurrent writes")
)

// FormatVersion is the layout of the keys this weft writes. A store records
// the version that created it; a weft refuses a store whose version is
// newer than its own (see CheckFormat).
const FormatVersion = 1

// CheckFormat returns an error saying why a store created with format
// version v cannot be used by this weft.
func CheckFormat(v int) error {
	if v > FormatVersion {
		return fmt.Errorf("store format version %d was written by a newer weft (this weft reads up to version %d): upgrade weft, or restore a backup written by this version", v, FormatVersion)
	}
	if v < 1 {
		return fmt.Errorf("store format version %d is not valid", v)
	}
	return nil
}
