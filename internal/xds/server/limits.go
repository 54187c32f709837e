package server

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// Defaults of Limits.
const (
	// DefaultMaxStreamsPerConn is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS
	// of the xDS listener: a proxy needs one ADS stream; a client that
	// opens more than this on one connection has the extra ones refused
	// (RST_STREAM REFUSED_STREAM; grpc-go clients queue them).
	DefaultMaxStreamsPerConn = 100
	// DefaultMaxStreamsPerIdentity caps the streams of one node id
	// (replicas of one virtual node or gateway).
	DefaultMaxStreamsPerIdentity = 1000
	// DefaultMaxStreams caps the ADS streams of the whole server.
	DefaultMaxStreams = 20000
	// DefaultFirstRequestTimeout bounds the wait for a stream's first
	// request (the one naming its node): a stream that says nothing holds
	// a slot of MaxStreams and is closed with DeadlineExceeded.
	DefaultFirstRequestTimeout = 10 * time.Second
	// DefaultMaxStreamAge is how long an ADS stream lasts before the
	// server ends it with OK, as App Mesh's management service reset
	// each stream about every 30 minutes (the App Mesh agent's own
	// grpc.max_connection_age_ms, 40 minutes, was set to match it): the
	// proxy connects again, is authorized again (a key removed from the
	// credentials file, a join token or certificate expired, stops
	// working within this time), and gets a full state of the world.
	// Each stream's age is jittered by ±10 % so that proxies started
	// together do not reconnect together.
	DefaultMaxStreamAge = 30 * time.Minute
	// DefaultMaxRecvMsgSize bounds one DiscoveryRequest (grpc-go's default,
	// kept explicit).
	DefaultMaxRecvMsgSize = 4 << 20
	// maxHeaderListSize bounds a stream's headers (gRPC metadata, such as
	// the SigV4 authorization a proxy sends: about 1 KiB); grpc-go's
	// default is 16 MiB.
	maxHeaderListSize = 64 << 10
	// logValueMax bounds a client's string (node id, NACK message) in a
	// log line; the rest is replaced by its length.
	logValueMax = 256
	// maxSubscribedNames bounds the names one stream subscribes to of one
	// type: a delta client adds names request by request, so that only a
	// cap bounds the set (a state-of-the-world request replaces it and is
	// bounded by MaxRecvMsgSize). A stream past it is closed with
	// ResourceExhausted.
	maxSubscribedNames = 1 << 16
	// nackMessageMax bounds the NACK message kept for /v1/proxies.
	nackMessageMax = 4096
	// keepaliveMinTime is the shortest ping interval allowed: App Mesh's
	// Envoy pings every 10 s (grpc.keepalive_time_ms); gRPC's default
	// policy (5 min) would answer it with GOAWAY too_many_pings.
	keepaliveMinTime = 5 * time.Second
	// keepaliveTime and keepaliveTimeout: the server pings a connection
	// idle this long and closes it when the ping is not answered in time,
	// so that a proxy gone without a FIN frees its streams.
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
	// recvWindow is the HTTP/2 flow-control window of every stream and
	// connection the xDS listener receives on, fixed: grpc-go's default
	// grows it by bandwidth-delay estimation, which sends a PING after
	// each burst of data received (each request: an ACK) and reads its
	// answer, one more write and read per push and proxy, for windows
	// that requests (a few hundred bytes; MaxRecvMsgSize at most) never
	// need. Measured with strace on the xDS server: a 47-byte write of
	// control frames beside each pushed response (docs/bench/xds.md,
	// round 9). 1 MiB bounds what one client can send unread, below the
	// 16 MiB the estimation may grow to.
	recvWindow = 1 << 20
	// DefaultMaxPushesInFlight is the push window (window.go): the
	// streams a write's pushes may await answers from at once. Measured
	// (docs/bench/xds.md, round 14): beside 10,000 grpc-go clients it keeps
	// the API call's p50 at 2-3 ms where it was 52-79 ms without a window,
	// at 256 and at 1,024 alike; but a window of 256 slowed a write's
	// convergence at 1,000 proxies (p99 4-12 ms more in 6 of 6 quiet
	// pairs), where one of 1,024 is never full. The window is for the
	// fan-outs past a thousand.
	DefaultMaxPushesInFlight = 1024
	// DefaultPushTimeout frees a window slot whose client has not
	// answered in this time.
	DefaultPushTimeout = time.Second
)

// Limits bound what clients can hold of the server. A zero field takes its
// default.
type Limits struct {
	MaxStreamsPerConn     uint32
	MaxStreamsPerIdentity int
	MaxStreams            int
	MaxRecvMsgSize        int
	FirstRequestTimeout   time.Duration
	MaxStreamAge          time.Duration
	// MaxPushesInFlight is the push window's size (window.go); negative:
	// no window.
	MaxPushesInFlight int
	PushTimeout       time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxStreamsPerConn == 0 {
		l.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if l.MaxStreamsPerIdentity <= 0 {
		l.MaxStreamsPerIdentity = DefaultMaxStreamsPerIdentity
	}
	if l.MaxStreams <= 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxRecvMsgSize <= 0 {
		l.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if l.FirstRequestTimeout <= 0 {
		l.FirstRequestTimeout = DefaultFirstRequestTimeout
	}
	if l.MaxStreamAge <= 0 {
		l.MaxStreamAge = DefaultMaxStreamAge
	}
	if l.MaxPushesInFlight == 0 {
		l.MaxPushesInFlight = DefaultMaxPushesInFlight
	}
	if l.PushTimeout <= 0 {
		l.PushTimeout = DefaultPushTimeout
	}
	return l
}

// streamAge is one stream's MaxStreamAge, jittered by ±10 % with r, a
// uniform number in [0, 1).
func (l Limits) streamAge(r float64) time.Duration {
	return time.Duration(float64(l.MaxStreamAge) * (0.9 + 0.2*r))
}

// GRPCOptions are the gRPC server options of the xDS listener that
// enforce l (its zero fields taking their defaults) and fix its receive
// windows; Serve adds its codec and Options.GRPCOptions. bench/adsfloor
// serves its gRPC rows with them.
func (l Limits) GRPCOptions() []grpc.ServerOption {
	l = l.withDefaults()
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(l.MaxStreamsPerConn),
		grpc.MaxRecvMsgSize(l.MaxRecvMsgSize),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.StaticStreamWindowSize(recvWindow),
		grpc.StaticConnWindowSize(recvWindow),
	}
}

// admitStream takes one of the server's stream slots, or fails with
// ResourceExhausted; release gives it back.
func (a *ads) admitStream() (release func(), err error) {
	if n := a.open.Add(1); n > int64(a.limits.MaxStreams) {
		a.open.Add(-1)
		a.hub.metrics.rejected.WithLabelValues(codes.ResourceExhausted.String()).Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "the xDS server has %d streams open, its limit", a.limits.MaxStreams)
	}
	return func() { a.open.Add(-1) }, nil
}

// join reserves a stream slot of an identity before the stream attaches,
// or fails with ResourceExhausted; the caller calls leave once the stream
// is in is.streams or has failed to attach. Called without mu held.
func (c *hub) join(id translate.Identity) error {
	limit := c.maxPerIdentity
	if limit <= 0 {
		limit = DefaultMaxStreamsPerIdentity
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.joining[id]
	if is := c.idents[id]; is != nil {
		n += len(is.streams)
	}
	if n >= limit {
		return status.Errorf(codes.ResourceExhausted, "mesh/%s/%s/%s has %d streams open, the limit per proxy identity", clip(id.Mesh), id.Kind, clip(id.Name), limit)
	}
	if c.joining == nil {
		c.joining = make(map[translate.Identity]int)
	}
	c.joining[id]++
	return nil
}

// leave ends a reservation of join.
func (c *hub) leave(id translate.Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joining[id] <= 1 {
		delete(c.joining, id)
		return
	}
	c.joining[id]--
}

// clip bounds a client's string for a log line or an error message: at
// most logValueMax bytes of it, then its full length.
func clip(s string) string { return clipTo(s, logValueMax) }

func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", strings.ToValidUTF8(s[:n], ""), len(s))
}
