package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// hub serves snapshots to ADS streams. The stream loops (ads.go) tell it
// what each stream requests (OnStreamRequest: which proxy, what it ACKed
// or NACKed) and open a watch per type (CreateWatch) where it answers;
// the methods keep the shapes of go-control-plane's sotw.Callbacks and
// cache.ConfigWatcher, whose protocol rules the loops follow.
//
// Why not go-control-plane's SnapshotCache: it keys nothing by stream, so it
// cannot order a stream's responses by type, stop the NACK resend loop
// without a wrapper, count write-to-ACK time per proxy, or close a stream
// whose resource was deleted. Its rules for when to answer are kept: answer
// when the version differs from what the client has, or when the client
// subscribes to a resource it has not yet been sent.
//
// Three rules on top:
//   - A stream gets at most one response in flight, and types in the order
//     CDS, EDS, LDS, RDS: the next response is released when the previous
//     one is handed to the stream (OnStreamResponse).
//   - A NACK parks the type: the client is treated as holding the version
//     it rejected, so nothing is resent until a new snapshot.
//   - A snapshot with closeErr closes the identity's streams with it.
type hub struct {
	log     *slog.Logger
	metrics *metrics
	// attach and detach tell the push loop that a stream of an identity
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

	mu      sync.Mutex // protects everything below and every *stream
	streams map[int64]*stream
	// byNode finds a request's stream: every request of a stream carries
	// the same *core.Node once OnStreamRequest has seen it.
	byNode map[*core.Node]*stream
	idents map[translate.Identity]*identState
	// joining counts the streams of an identity between join and leave.
	joining map[translate.Identity]int
	// changed is closed and replaced whenever what Proxies reports may
	// have changed, so that a caller can wait for it without polling;
	// nil while nobody has asked for it since the last change (most
	// changes, one per request and response, have no waiter).
	changed chan struct{}
}

// identState is one proxy identity as the hub knows it.
type identState struct {
	snap    *snapshot // nil until the push loop first translates it
	streams map[*stream]struct{}
	// err is the last translation or validation error, "" once a
	// translation succeeds again.
	err string
	// loggedNack is the version last logged as NACKed, per type, so that
	// replicas NACKing the same push log once.
	loggedNack [numTypes]string
}

// stream is one ADS stream (one proxy replica).
type stream struct {
	id          int64
	ctx         context.Context // the gRPC stream's context
	connectedAt time.Time
	node        *core.Node // from the first request; nil before it
	nodeID      string
	ident       translate.Identity
	attached    bool
	// proven: the stream proved its identity (Options.Authorize).
	proven bool
	// secretsOK: the stream may be sent secrets holding a key (proven,
	// or Options.InsecureSecrets).
	secretsOK bool
	// is is c.idents[ident] once attached: it lives as long as one of its
	// streams does (dropIdentity keeps an identity that has streams).
	is       *identState
	log      *slog.Logger
	closeErr error
	// inflight is the watch whose response sits in its channel, not yet
	// handed to the stream: the next response waits for it. The server
	// drops it if a request of the same type comes first (see cancel).
	inflight *watch
	types    [numTypes]streamType
	// ready (cap 1) is written by the hub after it answers a watch and
	// read by the stream's loop (ads.go); never closed.
	ready chan struct{}
}

// streamType is what one stream knows and was sent of one type.
type streamType struct {
	subscribed bool   // the client asked for this type at least once
	w          *watch // the open watch, nil while a response is in flight
	// known is the version the client holds for deciding whether to
	// answer: the version of its last request, or after a NACK the
	// version it rejected (parking).
	known       string
	sentVersion string
	sentNonce   string // of the last response sent
	// pendingNonce is sentNonce until a request answers it: meanwhile
	// go-control-plane ignores requests with another nonce as stale, and
	// so does the hub.
	pendingNonce string
	// pending is the commit time of the oldest write that changed this
	// type and that the client has not yet ACKed; zero when none.
	pending    time.Time
	acked      string
	ackedAt    time.Time
	lastNack   *NackStatus
	lastPushAt time.Time
}

type watch struct {
	req *discovery.DiscoveryRequest
	sub cache.Subscription
	ch  chan cache.Response
	// current is the version for which newNames found nothing to send:
	// sub does not change during the watch, so neither does the answer
	// while the version stays (flush runs at every request and push).
	current string
	// prevSent is the type's sentVersion before this watch was answered,
	// restored if the server drops the answer unsent.
	prevSent string
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
		byNode:       make(map[*core.Node]*stream),
		idents:       make(map[translate.Identity]*identState),
	}
}

// open registers a new stream. The returned channel receives a value
// whenever an answer is put on one of the stream's watches; the stream's
// loop then takes it from the watch's channel.
func (c *hub) open(ctx context.Context, id int64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &stream{id: id, ctx: ctx, connectedAt: time.Now(), log: c.log.With("stream", id), ready: make(chan struct{}, 1)}
	c.streams[id] = s
	c.metrics.streams.Inc()
	return s.ready
}

// OnStreamClosed is called when a stream's loop has ended.
func (c *hub) OnStreamClosed(id int64) {
	c.mu.Lock()
	s := c.streams[id]
	delete(c.streams, id)
	if s == nil {
		c.mu.Unlock()
		return
	}
	delete(c.byNode, s.node)
	if is := s.is; s.attached && is != nil {
		delete(is.streams, s)
	}
	c.bump()
	c.mu.Unlock()
	c.metrics.streams.Dec()
	if s.attached {
		s.log.Info("proxy disconnected")
		c.detach(s.ident)
	}
}

// OnStreamRequest is called with each request of a stream, before its
// watch is opened. The first request identifies the proxy; later ones are
// ACKs, NACKs or subscription changes.
func (c *hub) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		c.mu.Unlock()
		return status.Errorf(codes.Internal, "unknown stream %d", id)
	}
	first := s.node == nil
	c.mu.Unlock()
	if first {
		if err := c.identify(s, req); err != nil {
			c.metrics.rejected.WithLabelValues(status.Code(err).String()).Inc()
			return err
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.bump()
	// From now on every request of the stream carries the same node, which
	// is how CreateWatch finds the stream (Envoy repeats the node in every
	// request, gRPC clients only in the first).
	req.Node = s.node
	t := typeIndex(req.GetTypeUrl())
	if t < 0 {
		return nil
	}
	st := &s.types[t]
	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("request", "type", typeName(t), "version", req.GetVersionInfo(), "nonce", req.GetResponseNonce(), "names", req.GetResourceNames(), "nack", req.GetErrorDetail() != nil)
	}
	if st.pendingNonce != "" && req.GetResponseNonce() != st.pendingNonce {
		// Sent before the client saw our last response: go-control-plane
		// ignores it (and opens no watch), and so does the hub.
		return nil
	}
	answer := st.pendingNonce != ""
	st.pendingNonce = ""
	st.subscribed = true
	switch {
	case !answer:
		// A subscription (new, or new names) before any response or
		// after the last one was answered. A first version may come from
		// an earlier stream (a reconnect): if it is ours, the client
		// holds exactly our resources.
		if req.GetResponseNonce() == "" {
			st.known = req.GetVersionInfo()
		}
	case req.GetErrorDetail() != nil:
		st.known = st.sentVersion // park: do not resend what was rejected
		st.pending = time.Time{}
		n := &NackStatus{Type: typeName(t), Version: st.sentVersion, Message: clipTo(req.GetErrorDetail().GetMessage(), nackMessageMax), At: time.Now()}
		st.lastNack = n
		c.metrics.nacks.WithLabelValues(n.Type).Inc()
		if is := s.is; is != nil && is.loggedNack[t] != n.Version {
			is.loggedNack[t] = n.Version
			s.log.Warn("proxy rejected configuration", "type", n.Type, "version", n.Version, "error", clip(req.GetErrorDetail().GetMessage()))
		}
	default:
		st.known = req.GetVersionInfo()
		st.acked = req.GetVersionInfo()
		st.ackedAt = time.Now()
		c.metrics.acks.WithLabelValues(typeName(t)).Inc()
		is := s.is
		if !st.pending.IsZero() && is != nil && is.snap != nil && is.snap.types[t].version == st.acked {
			c.metrics.writeToAck.WithLabelValues(typeName(t)).Observe(st.ackedAt.Sub(st.pending).Seconds())
			st.pending = time.Time{}
		}
	}
	return nil
}

// identify parses the first request's node, attaches the stream to its
// identity (which makes the push loop translate it if no other replica
// did), and registers the stream. Errors are gRPC status errors.
func (c *hub) identify(s *stream, req *discovery.DiscoveryRequest) error {
	node := req.GetNode()
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
	log := s.log.With("node", clip(node.GetId()), "proxyless", ident.Proxyless)
	var proven bool
	if c.authorize != nil {
		// Before attach: nothing of the identity is computed or sent to
		// a stream that has not shown it may have it.
		if proven, err = c.authorize(s.ctx, ident); err != nil {
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
	if err := c.attach(s.ctx, ident); err != nil {
		// The error may quote the node id's mesh or name: clip it.
		st := status.Convert(err)
		log.Info("proxy rejected", "code", st.Code(), "error", clip(st.Message()))
		return status.Error(st.Code(), clip(st.Message()))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s.node, s.nodeID, s.ident, s.attached, s.log, s.proven = node, node.GetId(), ident, true, log, proven
	s.secretsOK = proven || c.insecureSecrets
	c.byNode[node] = s
	is := c.ident(ident)
	is.streams[s] = struct{}{}
	s.is = is
	c.bump()
	log.Info("proxy connected", "user_agent", clip(node.GetUserAgentName()), "user_agent_version", clip(node.GetUserAgentVersion()))
	return nil
}

// statusChanged returns a channel closed at the next status change.
func (c *hub) statusChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

// signal signals a status change.
func (c *hub) signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump()
}

// bump signals a status change. Called with mu held.
func (c *hub) bump() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

func (c *hub) ident(id translate.Identity) *identState {
	is := c.idents[id]
	if is == nil {
		is = &identState{streams: make(map[*stream]struct{})}
		c.idents[id] = is
	}
	return is
}

// OnStreamResponse runs on the stream's goroutine just before a response
// is sent, which releases the next type.
func (c *hub) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, out *discovery.DiscoveryResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[id]
	t := typeIndex(out.GetTypeUrl())
	if s == nil || t < 0 {
		return
	}
	st := &s.types[t]
	st.sentNonce = out.GetNonce()
	st.pendingNonce = out.GetNonce()
	st.lastPushAt = time.Now()
	s.inflight = nil
	c.bump()
	c.metrics.pushes.WithLabelValues(typeName(t)).Inc()
	c.flush(s)
}

// CreateWatch opens the watch of a request's type, answered on ch (cap 1)
// when there is something to send. The returned func cancels it.
func (c *hub) CreateWatch(req *discovery.DiscoveryRequest, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.byNode[req.GetNode()]
	if s == nil {
		return nil, status.Error(codes.Internal, "watch for a stream that was not identified")
	}
	if s.closeErr != nil {
		return nil, s.closeErr
	}
	t := typeIndex(req.GetTypeUrl())
	if t < 0 {
		// A type weft does not serve (SDS, RTDS, ...): the watch stays
		// open and silent, as for a resource that does not exist yet.
		return func() {}, nil
	}
	w := &watch{req: req, sub: sub, ch: ch}
	st := &s.types[t]
	st.w = w
	c.flush(s)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if st.w == w {
			st.w = nil
		}
		if s.inflight == w {
			// Answered but not sent: a request of the same type came first
			// and the server drops the answer with the watch. The request
			// opens a new watch at once, which is answered anew.
			s.inflight = nil
			st.sentVersion = w.prevSent
		}
	}, nil
}

// deliver hands the core's updates to the streams, in order. Called by
// the runner only.
func (c *hub) deliver(ups []update) {
	if len(ups) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range ups {
		switch {
		case u.gone:
			if is := c.idents[u.id]; is != nil && len(is.streams) == 0 {
				delete(c.idents, u.id)
			}
		case u.err != nil:
			c.ident(u.id).err = u.err.Error()
			c.bump()
		default:
			c.setSnapshot(u.id, u.snap, u.keepErr)
		}
	}
}

// setSnapshot hands a new snapshot of an identity to its streams; unless
// keepErr, it clears the identity's translation error. Called with mu
// held.
func (c *hub) setSnapshot(id translate.Identity, snap *snapshot, keepErr bool) {
	is := c.ident(id)
	old := is.snap
	is.snap = snap
	if !keepErr {
		is.err = ""
	}
	for t := range numTypes {
		nt := &snap.types[t]
		if old != nil && old.types[t].version == nt.version || nt.changedAt.IsZero() {
			continue
		}
		for s := range is.streams {
			// A type the stream has not asked for yet is not waited on:
			// its first response answers the subscription, not the write.
			if st := &s.types[t]; st.subscribed && st.pending.IsZero() && st.known != nt.version {
				st.pending = nt.changedAt
			}
		}
	}
	for s := range is.streams {
		if snap.closeErr != nil {
			c.closeStream(s, snap.closeErr)
			continue
		}
		c.flush(s)
	}
}

// closeStream ends a stream with err: through any open watch now, or through the
// next one the stream opens.
func (c *hub) closeStream(s *stream, err error) {
	if s.closeErr != nil {
		return
	}
	s.closeErr = err
	s.log.Info("closing stream", "error", err)
	for t := range numTypes {
		if w := s.types[t].w; w != nil {
			s.types[t].w = nil
			w.ch <- &response{req: w.req, err: err} // cap 1, and no response is in it: w was open
			wake(s)
			return
		}
	}
}

// flush answers the first type, in order, that the stream should be sent.
// Called with mu held.
func (c *hub) flush(s *stream) {
	if s.inflight != nil || s.closeErr != nil || !s.attached {
		return
	}
	is := s.is
	if is == nil || is.snap == nil {
		return
	}
	if is.snap.closeErr != nil {
		c.closeStream(s, is.snap.closeErr)
		return
	}
	for t := range numTypes {
		st := &s.types[t]
		if !st.subscribed {
			continue
		}
		ts := &is.snap.types[t]
		if st.w == nil {
			// In flight (sent, not yet ACKed) or between a request and
			// its watch. Sent the current version: the next type may
			// follow. Owes a newer one: the types after it wait, so that a
			// route never arrives before the cluster it names.
			if st.sentVersion != ts.version && st.known != ts.version {
				return
			}
			continue
		}
		if st.known == ts.version && (st.w.current == ts.version || !newNames(st.w.sub, ts, hidesKeys(s, t))) {
			st.w.current = ts.version
			continue
		}
		c.respond(s, t, ts)
		return
	}
}

// hidesKeys reports whether type t of the stream leaves out the secrets
// holding a key: the stream proved nothing (Options.Authorize) and is not
// served insecurely.
func hidesKeys(s *stream, t int) bool { return t == typeSecret && !s.secretsOK }

// newNames reports whether the client subscribes to a resource it has not
// been sent on this stream; entries holding a key do not count when
// hideKeys.
func newNames(sub cache.Subscription, ts *typeSnapshot, hideKeys bool) bool {
	returned := sub.ReturnedResources()
	if sub.IsWildcard() {
		for _, e := range ts.entries {
			if _, ok := returned[e.name]; !ok && !(hideKeys && e.key) {
				return true
			}
		}
		return false
	}
	for name := range sub.SubscribedResources() {
		if e, ok := ts.byName[name]; !ok || (hideKeys && e.key) {
			continue
		}
		if _, ok := returned[name]; !ok {
			return true
		}
	}
	return false
}

// respond puts one response on type t's open watch. Called with mu held.
func (c *hub) respond(s *stream, t int, ts *typeSnapshot) {
	st := &s.types[t]
	w := st.w
	var anys []*anypb.Any
	var returned map[string]string
	hide := hidesKeys(s, t)
	switch {
	case hide:
		// Without the secrets holding a key: what the stream may have of
		// what it asked for.
		returned = make(map[string]string)
		for _, e := range ts.entries {
			if _, ok := w.sub.SubscribedResources()[e.name]; (ok || w.sub.IsWildcard()) && !e.key {
				anys = append(anys, e.any)
				returned[e.name] = ts.version
			}
		}
	case w.sub.IsWildcard() || subscribesAll(w.sub, ts):
		anys, returned = ts.full.get(ts)
	default:
		// Only what was asked for, in name order: a gRPC client asks for
		// the listeners, routes and clusters it uses; asking for a
		// resource that does not exist gets a response without it, which
		// is how the client learns that it does not exist.
		returned = make(map[string]string)
		for _, e := range ts.entries {
			if _, ok := w.sub.SubscribedResources()[e.name]; ok {
				anys = append(anys, e.any)
				returned[e.name] = ts.version
			}
		}
	}
	st.w = nil
	w.prevSent = st.sentVersion
	st.sentVersion = ts.version
	s.inflight = w
	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("push", "type", typeName(t), "version", ts.version, "resources", len(anys), "wildcard", w.sub.IsWildcard())
	}
	// A fresh DiscoveryResponse per stream: the server writes the nonce
	// into it. The Anys inside are shared and only read.
	w.ch <- &response{ // cap 1, and empty: the watch was open and unanswered
		req:      w.req,
		out:      &discovery.DiscoveryResponse{VersionInfo: ts.version, Resources: anys, TypeUrl: typeURL(t)},
		returned: returned,
	}
	wake(s)
}

// wake tells the stream's loop that a watch has an answer; a wake-up
// already pending covers this one too.
func wake(s *stream) {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// subscribesAll reports whether a subscription names every resource of
// ts, as Envoy's EDS and RDS subscriptions do.
func subscribesAll(sub cache.Subscription, ts *typeSnapshot) bool {
	names := sub.SubscribedResources()
	if len(names) < len(ts.entries) {
		return false
	}
	for _, e := range ts.entries {
		if _, ok := names[e.name]; !ok {
			return false
		}
	}
	return true
}

// fullResponse is the resources of a response that carries every
// resource of a typeSnapshot, built once and shared by every stream
// sent it (the replicas of an identity): nobody modifies the slice or
// the map, the stream loops and go-control-plane's Subscription included.
// Protected by hub.mu.
type fullResponse struct {
	anys     []*anypb.Any
	returned map[string]string
}

// get returns the shared resources, building them on first use. Called
// with hub.mu held.
func (f *fullResponse) get(ts *typeSnapshot) ([]*anypb.Any, map[string]string) {
	if f.returned == nil {
		f.anys = make([]*anypb.Any, len(ts.entries))
		f.returned = make(map[string]string, len(ts.entries))
		for i, e := range ts.entries {
			f.anys[i] = e.any
			f.returned[e.name] = ts.version
		}
	}
	return f.anys, f.returned
}

// response is one answer on a watch; with err set it ends the stream.
type response struct {
	req      *discovery.DiscoveryRequest
	out      *discovery.DiscoveryResponse
	returned map[string]string
	err      error
}

func (r *response) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) {
	return r.out, r.err
}
func (r *response) GetRequest() *discovery.DiscoveryRequest { return r.req }
func (r *response) GetVersion() (string, error)             { return r.out.GetVersionInfo(), nil }
func (r *response) GetResponseVersion() string              { return r.out.GetVersionInfo() }
func (r *response) GetReturnedResources() map[string]string { return r.returned }
func (r *response) GetContext() context.Context             { return context.Background() }
