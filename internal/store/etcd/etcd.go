// Package etcd is the Store on an etcd cluster, for several weft replicas
// sharing one state. Update is an optimistic transaction: fn runs on a
// snapshot at etcd revision R while every read is recorded (but those
// made through Unguarded), then one etcd Txn commits the writes if
// nothing fn read changed after R, and fn runs again on a newer snapshot
// if something did. On a replica that watches
// every key, the first attempt's snapshot is its own copy of the keys
// (mirror.go), so that the commit is the write's only request. Revisions
// are etcd's.
//
// Keys live under <prefix>/kv/; <prefix>/meta/ holds the format version and
// a sequence key every write transaction touches (see tx.commit).
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/store"
)

// Defaults of Options.
const (
	DefaultPrefix         = "/weft"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxCompares keeps a transaction's compares under etcd's
	// default --max-txn-ops (128). A transaction that read more keys than
	// this compares one sequence key instead (see tx.commit).
	DefaultMaxCompares = 100
	// DefaultMaxAttempts bounds how often Update runs fn when concurrent
	// writes keep invalidating what it read.
	DefaultMaxAttempts = 50
)

// Options configure a Store. Endpoints is required.
type Options struct {
	Endpoints []string
	// Prefix namespaces weft's keys in the cluster (DefaultPrefix).
	Prefix string
	// TLS, when set, is used for the connections to etcd.
	TLS *tls.Config
	// Username and Password authenticate to etcd when etcd has auth on.
	Username, Password string
	// DialTimeout bounds connecting at Open; RequestTimeout bounds every
	// etcd request, so that a lost cluster answers ErrUnavailable instead
	// of hanging.
	DialTimeout, RequestTimeout time.Duration
	MaxCompares, MaxAttempts    int
	// WatchBuffer is DefaultWatchBuffer when 0.
	WatchBuffer int
	// ProbeInterval is how often each endpoint's status is asked, to stop
	// sending requests to a member that does not answer
	// (DefaultProbeInterval when 0; with one endpoint there is no probe).
	ProbeInterval time.Duration
	Log           *slog.Logger
}

// Store is a store.Store on etcd.
type Store struct {
	c          *clientv3.Client
	rootPrefix string // every key of the store's
	kvPrefix   string
	seqKey     string
	formatKey  string
	opts       Options
	log        *slog.Logger
	metrics    *metrics
	local      localWatchers // the watchers this replica's commits go to
	mirror     mirror        // weft's keys as the watch of every key delivered them

	// leader, when set, is a client of the member that said it was the
	// leader at the last probe: commits go there (see guardEndpoints).
	leader atomic.Pointer[clientv3.Client]
	// answering holds the probe clients of the members that answered the
	// last probe: a request that timed out on one member is tried again
	// through one of them (retry.go).
	answering atomic.Pointer[[]*clientv3.Client]

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	guardDone chan struct{} // closed when guardEndpoints returns; nil without it

	// retryMu serialises this replica's transactions that already
	// conflicted once: many local writers of one key would otherwise keep
	// invalidating each other. First attempts stay concurrent, and
	// writers on other replicas are still resolved optimistically.
	retryMu sync.Mutex
	// known is the highest etcd revision this store has seen (reads,
	// commits, watch responses): a serializable read answered at an
	// older one is stale for sure (tx.get).
	known atomic.Int64

	// staleAt, when set (tests), is the revision an Update's first,
	// serializable read reads at: a member that far behind.
	staleAt int64

	// contendedUntil (Unix ns) is when the last conflict here stops making
	// new transactions queue on retryMu.
	contendedUntil atomic.Int64
}

// contentionWindow is how long after a conflict this replica's writes run
// one at a time from their first attempt.
const contentionWindow = time.Second

var _ store.Store = (*Store)(nil)

// Open connects to the cluster, checks (or, on an empty cluster, writes)
// the store's format version and returns the store. It fails when etcd
// cannot be reached within ctx or DialTimeout; the caller may retry.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.MaxCompares <= 0 {
		opts.MaxCompares = DefaultMaxCompares
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = DefaultWatchBuffer
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		Logger:      zap.NewNop(),
		// Keepalives notice a dead or paused member, so that requests and
		// watches move to another; etcd refuses pings more frequent than
		// its --grpc-keepalive-min-time (5 s by default).
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", opts.Endpoints, err)
	}
	s := &Store{
		c:          c,
		rootPrefix: opts.Prefix + "/",
		kvPrefix:   opts.Prefix + "/kv/",
		seqKey:     opts.Prefix + "/meta/seq",
		formatKey:  opts.Prefix + "/meta/format",
		opts:       opts,
		log:        opts.Log,
		metrics:    newMetrics(),
		closing:    make(chan struct{}),
	}
	if err := s.checkFormat(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if len(opts.Endpoints) > 1 {
		if opts.ProbeInterval <= 0 {
			opts.ProbeInterval = DefaultProbeInterval
		}
		s.guardDone = make(chan struct{})
		go func() { // ends when Close closes s.closing; Close waits for it
			defer close(s.guardDone)
			s.guardEndpoints(opts.ProbeInterval)
		}()
	}
	return s, nil
}

// checkFormat writes the format version into an empty store, or refuses a
// store written by a newer weft.
func (s *Store) checkFormat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.formatKey), "=", 0)).
		Then(clientv3.OpPut(s.formatKey, strconv.Itoa(store.FormatVersion))).
		Else(clientv3.OpGet(s.formatKey)).
		Commit()
	if err != nil {
		return fmt.Errorf("etcd %v: %w", s.opts.Endpoints, s.wrap(ctx, err))
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return fmt.Errorf("etcd store: format key %s vanished", s.formatKey)
	}
	v, err := strconv.Atoi(string(kvs[0].Value))
	if err != nil {
		return fmt.Errorf("etcd store: format key %s holds %q, not a version", s.formatKey, kvs[0].Value)
	}
	return store.CheckFormat(v)
}

// Client is the store's etcd client (for backups and health checks).
func (s *Store) Client() *clientv3.Client { return s.c }

// Close closes the client; watches end and pending calls fail.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		if s.guardDone != nil {
			<-s.guardDone
		}
		err = s.c.Close()
	})
	return err
}

func (s *Store) isClosed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// Ping implements store.Store: it reads the format key with a
// linearizable read, which succeeds only when the cluster has a quorum
// this client reaches.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	_, err := s.c.Get(ctx, s.formatKey, clientv3.WithCountOnly())
	return s.wrap(ctx, err)
}

// wrap classifies an etcd error: a lost or unreachable cluster becomes
// store.ErrUnavailable, a closed store store.ErrClosed. opCtx is the
// request's context (with the request timeout).
func (s *Store) wrap(opCtx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	if errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("%w: %w", store.ErrCompacted, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, rpctypes.ErrNoLeader),
		errors.Is(err, rpctypes.ErrLeaderChanged),
		errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrTooManyRequests),
		errors.Is(err, rpctypes.ErrStopped),
		errors.Is(err, rpctypes.ErrNotCapable):
		return true
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
			return true
		}
	}
	return false
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s.isClosed() {
		return 0, store.ErrClosed
	}
	t := s.newTx(ctx, true)
	if err := call(fn, t); err != nil {
		return 0, err
	}
	if err := t.ensureRev(); err != nil {
		return 0, err
	}
	return store.Revision(t.rev), nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	locked := false
	defer func() {
		if locked {
			s.retryMu.Unlock()
		}
	}()
	for attempt := 0; attempt < s.opts.MaxAttempts; attempt++ {
		// While writes here keep conflicting, first attempts queue too:
		// run concurrently they would mostly be wasted round trips.
		if !locked && (attempt == 1 || time.Now().UnixNano() < s.contendedUntil.Load()) {
			if !lockCtx(ctx, &s.retryMu) {
				return 0, ctx.Err()
			}
			locked = true
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if s.isClosed() {
			return 0, store.ErrClosed
		}
		// A first attempt may start from a stale read, unless writes here
		// are contending: a snapshot even slightly behind would then
		// mostly conflict.
		stale := attempt == 0 && time.Now().UnixNano() >= s.contendedUntil.Load()
		rev, ok, err := s.attempt(ctx, fn, stale)
		if err != nil {
			if errors.Is(err, errRestart) {
				continue
			}
			return 0, err
		}
		if ok {
			return rev, nil
		}
		s.contendedUntil.Store(time.Now().Add(contentionWindow).UnixNano())
		if attempt > 0 {
			// Holding the lock, the conflict came from another replica
			// (or a first attempt here): let it finish.
			if err := backoff(ctx, attempt); err != nil {
				return 0, err
			}
		}
	}
	return 0, store.ErrConflict
}

// attempt runs fn once on a new transaction and commits what it wrote;
// ok=false is a conflict. With staleFirst the transaction's first read
// may be stale (see tx.get): when it was, and the attempt failed, wrote
// nothing or conflicted, fn runs again at once on a linearizable
// snapshot, and that outcome stands. A conflict of a stale snapshot says
// nothing about contention between writers.
func (s *Store) attempt(ctx context.Context, fn func(store.Tx) error, staleFirst bool) (store.Revision, bool, error) {
	t := s.newTx(ctx, false)
	t.staleFirst = staleFirst
	if staleFirst && t.fromMirror() {
		s.metrics.stale.WithLabelValues(staleMirror).Inc()
	}
	err := call(fn, t)
	if t.stale && (err != nil && rerunnable(ctx, err) || err == nil && t.w.Len() == 0) {
		s.metrics.stale.WithLabelValues(staleRerun).Inc()
		return s.attempt(ctx, fn, false)
	}
	if err != nil {
		return 0, false, err
	}
	rev, ok, err := t.commit()
	if err == nil && !ok && t.stale {
		s.metrics.stale.WithLabelValues(staleRerun).Inc()
		return s.attempt(ctx, fn, false)
	}
	return rev, ok, err
}

// observe notes that etcd has reached rev.
func (s *Store) observe(rev int64) {
	for {
		cur := s.known.Load()
		if rev <= cur || s.known.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// rerunnable says whether fn's error may come from a stale snapshot, so
// that running fn again on a current one may change it: not when the
// store is lost or closed, or ctx ended (running again would only wait
// again).
func rerunnable(ctx context.Context, err error) bool {
	return ctx.Err() == nil && !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrClosed)
}

// lockCtx takes mu unless ctx ends first.
func lockCtx(ctx context.Context, mu *sync.Mutex) bool {
	if mu.TryLock() {
		return true
	}
	got := make(chan struct{})
	go func() { // ends when the lock is taken; hands it back if ctx ended
		mu.Lock()
		select {
		case got <- struct{}{}:
		case <-ctx.Done():
			mu.Unlock()
		}
	}()
	select {
	case <-got:
		return true
	case <-ctx.Done():
		return false
	}
}

// call runs fn, turning a panic into an error.
func call(fn func(store.Tx) error, t store.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: transaction panicked: %v", r)
		}
	}()
	return fn(t)
}
