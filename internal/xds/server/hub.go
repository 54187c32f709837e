package server

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// hub is where the runner's snapshots meet the streams. The runner hands
// it the machine's updates (deliver): it publishes each identity's
// snapshot and wakes the identity's streams. Each stream (stream.go) owns
// its protocol state and, woken, works out itself what to send from the
// snapshot it finds; the hub never writes to a stream's state.
//
// Why not go-control-plane's SnapshotCache and stream servers: they key
// nothing by stream, so they cannot order a stream's responses by type,
// stop the NACK resend loop without a wrapper, count write-to-ACK time per
// proxy, or close a stream whose resource was deleted; and they serve the
// two protocols from two caches. Their rules for when to answer are kept:
// answer when the version differs from what the client has, or when the
// client subscribes to a resource it has not yet been sent.
type hub struct {
	log     *slog.Logger
	metrics *metrics
	// attach and detach tell the runner that a stream of an identity
	// opened or closed; attach fails with a gRPC status error when the
	// identity's resource does not exist. Called without mu held.
	attach func(ctx context.Context, id translate.Identity) error
	detach func(id translate.Identity)
	// defaultOwner is the mesh owner of node ids that name none.
	defaultOwner string
	// maxPerIdentity caps the streams of one identity (see join).
	maxPerIdentity int
	// authorize and insecureSecrets are Options.Authorize and
	// InsecureSecrets.
	authorize       func(ctx context.Context, id translate.Identity) (bool, error)
	insecureSecrets bool
	// fanout calls fn(w, i) for i in [0, n) and returns when every call
	// has (the runner's parallel); nil calls them in turn.
	fanout func(n int, fn func(w, i int))
	// win bounds the pushes a write sends out at once (window.go); nil:
	// no bound.
	win *window
	// woken is deliver's list of the streams to push to, reused from
	// call to call; used by the runner's goroutine only.
	woken []*stream

	// mu protects the maps below and identState.streams and err. Lock
	// order: mu before a stream's mu (Proxies); a stream holding its own
	// mu takes no other but statusMu and identState.nackMu.
	mu      sync.Mutex
	streams map[int64]*stream
	idents  map[translate.Identity]*identState
	// joining counts the streams of an identity between join and leave.
	joining map[translate.Identity]int

	statusMu sync.Mutex // protects changed
	// changed is closed and replaced whenever what Proxies reports may
	// have changed, so that a caller can wait for it without polling;
	// nil while nobody has asked for it since the last change (most
	// changes, one per request and response, have no waiter).
	changed chan struct{}
}

// identState is one proxy identity as the hub knows it.
type identState struct {
	// snap is the identity's current snapshot, nil until the machine
	// first translates it; written by deliver, read by the streams.
	snap atomic.Pointer[snapshot]
	// streams are the identity's streams, in the order they joined (at
	// most Limits.MaxStreamsPerIdentity): a slice rather than a set, as
	// deliver goes through it for every push, and a map's iteration cost
	// 0.9 % of the server's CPU in xdsbench's headline shape.
	streams []*stream
	// replicas is len(streams), for the streams to read without mu.
	replicas atomic.Int32
	// err is the last translation or validation error, "" once a
	// translation succeeds again.
	err    string
	nackMu sync.Mutex // protects loggedNack
	// loggedNack is the version last logged as NACKed, per type, so that
	// replicas NACKing the same push log once.
	loggedNack [numTypes]string
}

// firstNack records that a replica NACKed version of type t and reports
// whether it is the first to: the one to log it.
func (is *identState) firstNack(t int, version string) bool {
	is.nackMu.Lock()
	defer is.nackMu.Unlock()
	if is.loggedNack[t] == version {
		return false
	}
	is.loggedNack[t] = version
	return true
}

// NackStatus is a rejected push: the version, its type and the proxy's
// message.
type NackStatus struct {
	Type    string    `json:"type"`
	Version string    `json:"version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

func newHub(log *slog.Logger, m *metrics, defaultOwner string) *hub {
	return &hub{
		log:          log,
		metrics:      m,
		defaultOwner: defaultOwner,
		streams:      make(map[int64]*stream),
		idents:       make(map[translate.Identity]*identState),
	}
}

// open registers a new stream, not yet identified.
func (c *hub) open(id int64, delta bool, addr string) *stream {
	s := &stream{id: id, delta: delta, addr: addr, connectedAt: time.Now(), log: c.log.With("stream", id), wake: make(chan struct{}, 1)}
	c.mu.Lock()
	c.streams[id] = s
	c.mu.Unlock()
	c.metrics.streams.Inc()
	return s
}

// close forgets a stream whose loop has ended, and detaches it.
func (c *hub) close(s *stream) {
	c.mu.Lock()
	delete(c.streams, s.id)
	if s.is != nil {
		if i := slices.Index(s.is.streams, s); i >= 0 {
			s.is.streams = slices.Delete(s.is.streams, i, i+1)
		}
		s.is.replicas.Store(int32(len(s.is.streams)))
	}
	c.mu.Unlock()
	c.win.run(c.win.leave(s))
	c.bump()
	c.metrics.streams.Dec()
	if s.is != nil {
		s.log.Info("proxy disconnected")
		c.detach(s.ident)
	}
}

// identify parses the first request's node, attaches the stream to its
// identity (which makes the runner translate it if no other replica did),
// and registers the stream with the identity. Errors are gRPC status
// errors. Called holding the stream's turn (serve).
func (c *hub) identify(ctx context.Context, s *stream, node *core.Node) error {
	if node == nil || node.GetId() == "" {
		s.log.Info("proxy rejected: no node id")
		return status.Error(codes.InvalidArgument, "the first request of a stream must carry node.id: the virtual node or virtual gateway ARN")
	}
	ident, err := ParseNodeID(node.GetId(), c.defaultOwner)
	if err != nil {
		s.log.Info("proxy rejected", "error", err) // err names the id, clipped
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ident.Proxyless = proxyless(node)
	ident.SDSSocket = sdsSocket(node)
	if ident.IngressPort, ident.EgressPort, err = translate.ListenerPorts(node.GetMetadata()); err != nil {
		s.log.Info("proxy rejected", "error", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	log := s.log.With("node", clip(node.GetId()), "proxyless", ident.Proxyless)
	var proven bool
	if c.authorize != nil {
		// Before attach: nothing of the identity is computed or sent to
		// a stream that has not shown it may have it.
		if proven, err = c.authorize(ctx, ident); err != nil {
			if _, ok := status.FromError(err); !ok {
				err = status.Error(codes.Unauthenticated, err.Error())
			}
			log.Info("proxy rejected", "error", err)
			return err
		}
	}
	if err := c.join(ident); err != nil {
		log.Info("proxy rejected", "error", err)
		return err
	}
	defer c.leave(ident)
	if err := c.attach(ctx, ident); err != nil {
		// The error may quote the node id's mesh or name: clip it.
		st := status.Convert(err)
		log.Info("proxy rejected", "code", st.Code(), "error", clip(st.Message()))
		return status.Error(st.Code(), clip(st.Message()))
	}
	s.mu.Lock()
	s.node, s.nodeID, s.ident, s.log, s.proven = node, node.GetId(), ident, log, proven
	s.secretsOK = proven || c.insecureSecrets
	s.mu.Unlock()
	c.mu.Lock()
	is := c.ident(ident)
	is.streams = append(is.streams, s)
	is.replicas.Store(int32(len(is.streams)))
	s.is = is
	// What the identity serves now is no write's doing for this stream:
	// its first responses answer its subscriptions (see stream.notice).
	s.seen = is.snap.Load()
	c.mu.Unlock()
	c.bump()
	log.Info("proxy connected", "user_agent", clip(node.GetUserAgentName()), "user_agent_version", clip(node.GetUserAgentVersion()), "delta", s.delta)
	return nil
}

// debug reports whether the streams log at Debug. A stream's logger is
// the hub's with attributes added, so it has the hub's level; asking the
// hub's, one handler every stream shares, rather than the stream's own,
// one handler per stream that is seldom in the processor's cache, took
// this check from 2.7 % of the server's CPU in xdsbench's headline shape
// (1.5 µs per push and ACK at 1,000 proxies) to noise (docs/bench/xds.md,
// round 13).
func (c *hub) debug(ctx context.Context) bool { return c.log.Enabled(ctx, slog.LevelDebug) }

// statusChanged returns a channel closed at the next status change.
func (c *hub) statusChanged() <-chan struct{} {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

// bump signals a status change.
func (c *hub) bump() {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// ident returns id's state, creating it. Called with mu held.
func (c *hub) ident(id translate.Identity) *identState {
	is := c.idents[id]
	if is == nil {
		is = &identState{}
		c.idents[id] = is
	}
	return is
}

// deliver publishes the machine's updates, in order, and pushes to the
// streams of the identities that have a new snapshot: an idle stream's
// response is sent here, on the fan-out's goroutines, and a busy one is
// woken to send it itself (push.go). Called by the runner only.
func (c *hub) deliver(ups []update) {
	if len(ups) == 0 {
		return
	}
	woken := c.woken[:0]
	c.mu.Lock()
	for _, u := range ups {
		switch {
		case u.gone:
			if is := c.idents[u.id]; is != nil && len(is.streams) == 0 {
				delete(c.idents, u.id)
			}
		case u.err != nil:
			c.ident(u.id).err = u.err.Error()
		default:
			is := c.ident(u.id)
			is.snap.Store(u.snap)
			if !u.keepErr {
				is.err = ""
			}
			woken = append(woken, is.streams...)
		}
	}
	c.mu.Unlock()
	// Outside mu: a push takes the stream's mu, and Proxies takes mu
	// before a stream's. A stream closed since is found ended.
	var inline atomic.Int64
	push := func(_, i int) {
		s := woken[i]
		handled, sent, next := s.pushNow(c.win)
		if !handled {
			s.poke()
		}
		c.win.run(next)
		if sent {
			inline.Add(1)
		}
	}
	switch {
	case len(woken) == 0:
	case c.fanout == nil || len(woken) < fanoutMin:
		for i := range woken {
			push(0, i)
		}
	default:
		c.fanout(len(woken), push)
	}
	c.metrics.inlinePushes.Add(float64(inline.Load()))
	clear(woken)
	c.woken = woken
	c.bump()
}

// fanoutMin is the fewest streams deliver pushes to on the fan-out's
// goroutines; fewer are pushed to on the runner's.
const fanoutMin = 64
