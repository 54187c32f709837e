package server

import (
	"context"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	xdsstream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// stream is one ADS stream (one proxy replica), state of the world or
// delta: both are served from the identity's one snapshot. Its state is
// used by one goroutine at a time, the one holding serve's turn (ads.go):
// the goroutine that received a request handles it, and the handler's,
// when woken (poke), works out what to send; mu guards the fields that
// Server.Proxies reads from other goroutines.
//
// The protocol rules, those of go-control-plane's servers:
//   - A request whose nonce is not the latest response's of its type is
//     stale: state of the world ignores it; delta keeps its subscription
//     changes but not its ACK.
//   - Types go out in the order SDS, CDS, EDS, LDS, RDS: while a type's
//     latest response is not ACKed and the client does not hold the
//     current version, the types after it wait, so that a route never
//     arrives before the cluster it names.
//   - A NACK parks the type: the client is treated as holding what it
//     rejected, so nothing is resent until a new snapshot.
//   - A snapshot with closeErr closes the stream with it.
type stream struct {
	id          int64
	delta       bool
	addr        string // the client's address (gRPC peer), "" when unknown
	connectedAt time.Time
	// wake (cap 1) is written by the hub when the identity's snapshot
	// changes and the stream's owed responses were not sent at once
	// (pushNow), and by pushNow; read by the stream's handler; never
	// closed.
	wake chan struct{}
	// nonces makes the random part of the stream's nonces (push.go);
	// used holding the turn.
	nonces *rand.ChaCha8

	// turn is held by the goroutine that handles a request or sends:
	// the stream's protocol state and its gRPC stream's SendMsg are used
	// by one goroutine at a time (serve, pushNow).
	turn sync.Mutex
	// Guarded by turn: ended, the handler (serve) is returning and
	// nothing more may be sent; pushErr, a push sent by pushNow failed
	// and the handler must end the stream with it; send, set by serve
	// before the stream joins its identity, sends at most limit of the
	// responses the stream owes (0: all) and says how many it sent;
	// more as next's.
	ended   bool
	pushErr error
	send    func(limit int) (sent int, more bool, err error)

	// Guarded by the hub's window's mu (window.go): slot, the number of
	// the push window's slot the stream holds (0: none); queued, of its
	// place in the window's queue (0: not queued); left, the stream
	// closed.
	slot, queued uint64
	left         bool

	// Set by identify, holding the stream's turn (serve). is is read under
	// hub.mu by Proxies (identify sets it holding hub.mu).
	is   *identState
	log  *slog.Logger
	seen *snapshot // the identity's snapshot the stream last looked at
	// nonce counts the responses sent, for their nonces.
	nonce int64
	// asked: the request handle last took asked for something the
	// client was not sent (a first or changed subscription): the answer
	// does not wait for the push window (window.go).
	asked bool
	// preEncode: a state-of-the-world response carrying every resource of
	// a type is sent as the bytes encoded once for every stream that gets
	// it (codec.go). Set by serve before the stream runs.
	preEncode bool

	mu     sync.Mutex // protects the fields below, which Proxies reads
	node   *core.Node
	nodeID string
	ident  translate.Identity
	// proven: the stream proved its identity (Options.Authorize);
	// secretsOK: it may be sent secrets holding a key (proven, or
	// Options.InsecureSecrets).
	proven    bool
	secretsOK bool
	types     [numTypes]streamType
	obs       Observer // Options.Observer; nil: none
}

// streamType is what one stream knows and was sent of one type.
type streamType struct {
	subscribed bool // the client asked for this type at least once
	sub        xdsstream.Subscription
	// legacyWildcard (state of the world): no request has named a
	// resource yet, so an empty list still means every resource (sub
	// keeps this state to itself).
	legacyWildcard bool
	// awaiting: a response went out and no request answered its nonce
	// (sentNonce) yet.
	awaiting bool
	// known is the version the client holds for deciding whether to
	// answer: the version of its last request, or after a NACK the
	// version it rejected (parking). State of the world only.
	known       string
	sentVersion string
	sentNonce   string
	// current is a version for which the subscription was found to need
	// nothing: it holds until the next request changes the subscription.
	current string
	// allNames (state of the world) is the names of a type's snapshots
	// that the subscription was found to name every one of
	// (subscribesAll), nil when none: it holds until a request changes the
	// subscription, so that a new snapshot with the same names (a route
	// write's) is not looked up name by name again.
	allNames *nameSet
	// absent (delta) holds the subscribed names the client was told do
	// not exist, in a response's removed_resources.
	absent map[string]struct{}
	// pending is the commit time of the oldest write that changed this
	// type and that the client has not yet ACKed; zero when none.
	pending    time.Time
	acked      string
	ackedAt    time.Time
	lastNack   *NackStatus
	lastPushAt time.Time
}

// poke wakes the stream's handler (serve); a wake-up already pending covers
// this one too.
func (s *stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// request is what a SotW or delta request says about one type.
type request struct {
	typeURL   string
	nonce     string
	errDetail *rpcstatus.Status
	version   string            // SotW: version_info
	names     []string          // SotW: resource_names
	subscribe []string          // delta
	unsub     []string          // delta
	initial   map[string]string // delta: initial_resource_versions
}

// handle applies one request of the stream; an error (a gRPC status)
// closes the stream. Called holding its turn (serve).
func (s *stream) handle(ctx context.Context, c *hub, req request) error {
	t := typeIndex(req.typeURL)
	if t < 0 {
		return nil // a type weft does not serve (RTDS, ...): never answered
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer c.bump()
	st := &s.types[t]
	s.asked = false
	if c.debug(ctx) {
		s.log.Debug("request", "type", typeName(t), "version", req.version, "nonce", req.nonce, "names", req.names, "subscribe", req.subscribe, "unsubscribe", req.unsub, "nack", req.errDetail != nil)
	}
	stale := st.awaiting && req.nonce != st.sentNonce
	if stale && !s.delta {
		// Sent before the client saw our last response: go-control-plane
		// ignores it, and so do we.
		return nil
	}
	// Delta subscription changes are increments: even a stale request's
	// must be kept.
	first := !st.subscribed
	st.subscribed = true
	changed := true // the subscription may have changed
	switch {
	case !s.delta && first:
		// Legacy wildcard stays on: Envoy's first LDS and CDS requests
		// name nothing and mean everything.
		st.sub = xdsstream.NewSotwSubscription(req.names, true)
		st.legacyWildcard = len(req.names) == 0
	case !s.delta:
		if changed = resubscribe(st, req.names); changed {
			st.allNames = nil
		}
	case first:
		st.sub = xdsstream.NewDeltaSubscription(req.subscribe, req.unsub, req.initial, true)
	default:
		st.sub.UpdateResourceSubscriptions(req.subscribe, req.unsub)
		for _, n := range req.unsub {
			delete(st.absent, n)
		}
	}
	if s.delta {
		changed = first || len(req.subscribe) > 0 || len(req.unsub) > 0
	}
	s.asked = changed
	if n := len(st.sub.SubscribedResources()); n > maxSubscribedNames {
		c.metrics.rejected.WithLabelValues(codes.ResourceExhausted.String()).Inc()
		s.log.Info("closing stream", "error", "too many names subscribed", "type", typeName(t), "names", n)
		return status.Errorf(codes.ResourceExhausted, "%s: %d resource names subscribed on one stream, more than the limit of %d", typeName(t), n, maxSubscribedNames)
	}
	st.current = ""
	if stale {
		return nil
	}
	answer := st.awaiting
	st.awaiting = false
	switch {
	case !answer:
		// A subscription (new, or new names) before any response or
		// after the last one was answered. A first version may come from
		// an earlier stream (a reconnect): if it is ours, the client
		// holds exactly our resources.
		if req.nonce == "" && !s.delta {
			st.known = req.version
		}
	case req.errDetail != nil:
		st.known = st.sentVersion // park: do not resend what was rejected
		st.pending = time.Time{}
		n := &NackStatus{Type: typeName(t), Version: st.sentVersion, Message: clipTo(req.errDetail.GetMessage(), nackMessageMax), At: time.Now()}
		st.lastNack = n
		c.metrics.nacks.WithLabelValues(n.Type).Inc()
		if s.obs != nil {
			s.obs.Acked(AckInfo{StreamID: s.id, NodeID: s.nodeID, TypeURL: req.typeURL, Version: st.sentVersion, Nonce: st.sentNonce, Error: n.Message})
		}
		if s.is != nil && s.is.firstNack(t, n.Version) {
			s.log.Warn("proxy rejected configuration", "type", n.Type, "version", n.Version, "error", clip(req.errDetail.GetMessage()))
		}
	default:
		version := req.version
		if s.delta {
			version = st.sentVersion // delta ACKs name no version: the response's
		}
		st.known = version
		st.acked = version
		st.ackedAt = time.Now()
		c.metrics.acksBy[t].Inc()
		if s.obs != nil {
			s.obs.Acked(AckInfo{StreamID: s.id, NodeID: s.nodeID, TypeURL: req.typeURL, Version: version, Nonce: st.sentNonce})
		}
		if snap := s.seen; !st.pending.IsZero() && snap != nil && snap.types[t].version == st.acked {
			c.metrics.writeToAckBy[t].Observe(st.ackedAt.Sub(st.pending).Seconds())
			st.pending = time.Time{}
		}
	}
	if answer && !changed && !s.delta && st.known == st.sentVersion {
		// The ACK (or NACK) of the latest response, naming what the
		// stream subscribed to when it was sent. That response carried
		// every resource of its version the subscription names (next),
		// so the client is owed nothing more of that version: next need
		// not look the names up again (newNames) on every ACK.
		// TestAckKeepsCurrent compares this with looking them up.
		st.current = st.sentVersion
	}
	return nil
}

// resubscribe sets a state-of-the-world subscription to names, first
// giving it a map of its own for its returned resources if the new
// subscription would delete some from it: the map may be a
// fullResponse's, shared by every stream sent it. An empty list deletes
// nothing while the legacy wildcard holds, and every name after.
func resubscribe(st *streamType, names []string) (changed bool) {
	if !st.legacyWildcard && !st.sub.IsWildcard() && sameNames(st.sub.SubscribedResources(), names) {
		// An ACK naming what the stream subscribes to already (most
		// requests): nothing would change, and nothing is allocated.
		return false
	}
	if !st.legacyWildcard || len(names) > 0 {
		ownReturned(&st.sub, names)
		st.legacyWildcard = false
	}
	st.sub.SetResourceSubscription(names)
	return true
}

// sameNames reports whether names, a short list, is exactly the set cur
// (no wildcard, no duplicate); a long list is reported different, to be
// applied as ever.
func sameNames(cur map[string]struct{}, names []string) bool {
	if len(names) != len(cur) || len(names) > 64 {
		return false
	}
	for i, n := range names {
		if _, ok := cur[n]; !ok || n == "*" || slices.Contains(names[:i], n) {
			return false
		}
	}
	return true
}

func ownReturned(sub *xdsstream.Subscription, names []string) {
	returned := sub.ReturnedResources()
	if len(returned) == 0 || slices.Contains(names, "*") {
		return // SetResourceSubscription deletes nothing
	}
	for name := range returned {
		if !slices.Contains(names, name) {
			sub.SetReturnedResources(maps.Clone(returned))
			return
		}
	}
}

// notice takes the identity's current snapshot: each type a write changed
// since the stream last looked starts waiting for the client's ACK (the
// write-to-ACK metric). Called with mu held.
func (s *stream) notice(snap *snapshot) {
	old := s.seen
	s.seen = snap
	if old == snap {
		return
	}
	for t := range numTypes {
		nt := snap.types[t]
		if old != nil && old.types[t].version == nt.version || nt.changedAt.IsZero() {
			continue
		}
		// A type the stream has not asked for yet is not waited on: its
		// first response answers the subscription, not the write.
		if st := &s.types[t]; st.subscribed && st.pending.IsZero() && st.known != nt.version {
			st.pending = nt.changedAt
		}
	}
}

// outgoing is one response to send: SotW (a message, or one carrying
// every resource of a type, encoded by the codec) or delta.
type outgoing struct {
	sotw  *discovery.DiscoveryResponse
	enc   preEncoded
	delta *discovery.DeltaDiscoveryResponse
}

// next appends to out the responses the stream should be sent now, in
// type order, at most limit of them (0: no limit), and records them as
// sent; more says it stopped at limit before a type whose version it has
// not sent, which may be owed too. A non-nil error (a gRPC status) closes
// the stream. Called holding the stream's turn (serve).
func (s *stream) next(c *hub, out []outgoing, limit int) (_ []outgoing, more bool, err error) {
	if s.is == nil {
		return out, false, nil
	}
	snap := s.is.snap.Load()
	if snap == nil {
		return out, false, nil
	}
	if snap.closeErr != nil {
		s.log.Info("closing stream", "error", snap.closeErr)
		return out, false, snap.closeErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notice(snap)
	for t := range numTypes {
		st := &s.types[t]
		if !st.subscribed {
			continue
		}
		ts := snap.types[t]
		if limit > 0 && len(out) >= limit {
			if st.sentVersion != ts.version && st.current != ts.version {
				return out, true, nil
			}
			continue
		}
		if st.awaiting {
			// Sent and not yet answered. Sent the current version: the
			// next type may follow. Owes a newer one: the types after it
			// wait.
			if st.sentVersion != ts.version && st.known != ts.version {
				return out, false, nil
			}
			continue
		}
		if st.current == ts.version {
			continue
		}
		var o outgoing
		if s.delta {
			o.delta = s.deltaResponse(t, ts, snap.types[typeCluster])
		} else if st.known != ts.version || newNames(st.sub, ts, s.hidesKeys(t)) {
			if s.preEncode && !s.hidesKeys(t) && s.subscribesFull(st, ts) {
				// Every resource of the type, encoded by the codec:
				// once for several replicas; a lone stream's as it is
				// sent, and not kept.
				st.sub.SetReturnedResources(ts.full.names.get(ts))
				o.enc = preEncoded{ts: ts, typ: t}
				if s.is.replicas.Load() > 1 {
					o.enc.body = ts.full.body(ts, t)
				}
			} else {
				o.sotw = s.sotwResponse(t, ts)
			}
		}
		if o.sotw == nil && o.delta == nil && !o.enc.set() {
			st.current = ts.version
			if st.acked != "" && st.acked == st.sentVersion {
				// The client ACKed what it was last sent and this version
				// has nothing new for it (delta: no resource differs):
				// it holds this version, and /v1/proxies says so.
				st.acked = ts.version
				st.pending = time.Time{}
			}
			continue
		}
		nonce := s.nextNonce()
		switch {
		case o.enc.set():
			o.enc.nonce = nonce
		case o.sotw != nil:
			o.sotw.Nonce = nonce
		default:
			o.delta.Nonce = nonce
		}
		st.awaiting = true
		initial := st.sentNonce == "" // the first response of the type on this stream
		st.sentVersion = ts.version
		st.sentNonce = nonce
		st.lastPushAt = time.Now()
		c.metrics.pushesBy[t].Inc()
		if s.obs != nil {
			s.obs.Pushed(PushInfo{StreamID: s.id, NodeID: s.nodeID, TypeURL: typeURL(t), Version: ts.version, Nonce: nonce, Revision: snap.rev, Initial: initial})
		}
		if c.debug(context.Background()) {
			s.log.Debug("push", "type", typeName(t), "version", ts.version, "wildcard", st.sub.IsWildcard(), "delta", s.delta)
		}
		out = append(out, o)
	}
	return out, false, nil
}
