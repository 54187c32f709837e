// Package xdsclient is weft proxy's xDS client: one aggregated (ADS)
// stream over gRPC, delta (incremental) by default or state of the world
// (Config.Protocol), that subscribes to every Cluster and Listener, then
// to the ClusterLoadAssignments and RouteConfigurations those name, and
// ACKs or NACKs each response.
//
// The flow per response: decode, merge into the last accepted set of that
// type (delta: add or replace the resources sent, drop the removed ones),
// hand the complete set to the Handler, then ACK or NACK (SotW:
// version_info = the response's version, or the last accepted one with
// error_detail = the Handler's error; delta: the nonce, and error_detail). When the stream breaks the
// client reconnects with jittered exponential backoff; the Handler's state
// is untouched meanwhile, so the proxy keeps serving its last good config.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resources weft proxy consumes.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	resourceType = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// Handler applies complete, decoded states. Each method is called from the
// client's goroutine only, one at a time. An error rejects the update
// (NACK); the handler must then leave its previous state in place.
type Handler interface {
	// Clusters applies the full set of clusters and returns the names of
	// the clusters whose endpoints to subscribe to (EDS).
	Clusters(ctx context.Context, version string, cs []*clusterv3.Cluster) (eds []string, err error)
	// Endpoints applies assignments for the subscribed clusters.
	Endpoints(ctx context.Context, version string, es []*endpointv3.ClusterLoadAssignment) error
	// Listeners applies the full set of listeners and returns the names of
	// the route configurations to subscribe to (RDS).
	Listeners(ctx context.Context, version string, ls []*listenerv3.Listener) (rds []string, err error)
	// Routes applies the subscribed route configurations.
	Routes(ctx context.Context, version string, rs []*routev3.RouteConfiguration) error
}

// SecretHandler is implemented by handlers that take secrets on the ADS
// stream (SDS over ADS, Envoy's sds_config {ads: {}}).
type SecretHandler interface {
	// Secrets applies the subscribed secrets.
	Secrets(ctx context.Context, version string, ss []*tlsv3.Secret) error
	// SecretNames returns the names of the secrets on the ADS stream that
	// the current clusters and listeners use; asked after each accepted
	// CDS or LDS update.
	SecretNames() []string
}

// Config configures a client.
type Config struct {
	// Server is host:port of the ADS server (plaintext gRPC by default), or
	// several, host:port,host:port,...: the client uses one and fails
	// over to another (as it does across a name's A records).
	Server string
	Node   *corev3.Node
	// DialOptions follow the defaults: TLS transport credentials replace
	// plaintext, per-RPC credentials (a join token) prove the identity.
	DialOptions []grpc.DialOption
	// BackoffBase and BackoffMax bound the reconnect delay; defaults are
	// Envoy's 500 ms and 30 s.
	BackoffBase, BackoffMax time.Duration
	// Protocol is ProtocolDelta (the default when empty) or ProtocolSotW.
	Protocol string
}

// The xDS protocol variants a client speaks.
const (
	ProtocolDelta = "delta" // DeltaAggregatedResources: only what changed
	ProtocolSotW  = "sotw"  // StreamAggregatedResources: the state of the world
)

// Client is an ADS client. Create with New, run with Run.
type Client struct {
	cfg       Config
	h         Handler
	log       *slog.Logger
	connected atomic.Bool

	// Per-type state, owned by the Run goroutine.
	types map[string]*typeState

	// Counters for stats, read from any goroutine.
	Accepted, Rejected atomic.Int64
	// OnConnect, when set, is called with true when a stream opens and
	// false when it ends.
	OnConnect func(bool)
}

type typeState struct {
	url       string
	wildcard  bool
	names     []string                 // subscribed names, sorted (non-wildcard types)
	version   string                   // last accepted version
	nonce     string                   // nonce of the last response
	resources map[string]proto.Message // last accepted resources by name
	// versions are the accepted resources' versions (delta), sent as
	// initial_resource_versions when a stream opens.
	versions map[string]string
	// onStream are the names subscribed on the current delta stream;
	// requested says the type was asked for on it.
	onStream  []string
	requested bool
}

// New returns a client that will feed h.
func New(cfg Config, h Handler, log *slog.Logger) *Client {
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 500 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	c := &Client{cfg: cfg, h: h, log: log, types: map[string]*typeState{}}
	for _, t := range []struct {
		url      string
		wildcard bool
	}{{ClusterType, true}, {EndpointType, false}, {ListenerType, true}, {RouteType, false}, {SecretType, false}} {
		c.types[t.url] = &typeState{url: t.url, wildcard: t.wildcard, resources: map[string]proto.Message{}, versions: map[string]string{}}
	}
	return c
}

// Connected reports whether an ADS stream is open.
func (c *Client) Connected() bool { return c.connected.Load() }

// Run keeps a stream to the server until ctx ends, reconnecting with
// backoff. It returns nil when ctx ends.
func (c *Client) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The same keepalive the App Mesh agent configures for Envoy.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}, WindowOptions()...)
	opts = append(opts, c.cfg.DialOptions...)
	target, topts, err := DialTarget(c.cfg.Server)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(target, append(opts, topts...)...)
	if err != nil {
		return fmt.Errorf("xds client for %s: %w", c.cfg.Server, err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	delay := c.cfg.BackoffBase
	for {
		progressed, err := c.stream(ctx, ads)
		if ctx.Err() != nil {
			return nil
		}
		if status.Code(err) == codes.InvalidArgument {
			// The control plane refuses this proxy's request as such (a
			// malformed node id): asking again cannot help, so give up
			// with the reason. NotFound, by contrast, is retried: the
			// virtual node may be created later, and App Mesh configured
			// the proxy when it reconnected.
			return fmt.Errorf("the control plane at %s refused this proxy: %s", c.cfg.Server, status.Convert(err).Message())
		}
		if progressed {
			delay = c.cfg.BackoffBase
		}
		wait := time.Duration(rand.Int64N(int64(delay))) + delay/2 // jitter around delay
		if err == nil || errors.Is(err, io.EOF) {
			// Ended with OK: the control plane resets streams
			// periodically (weft's and App Mesh's, about every 30
			// minutes), which is no failure.
			c.log.Info("xds stream closed by the control plane; reconnecting", "server", c.cfg.Server, "in", wait.Round(time.Millisecond))
		} else {
			c.log.Warn("xds stream ended; reconnecting", "server", c.cfg.Server, "err", err, "in", wait.Round(time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, c.cfg.BackoffMax)
	}
}

// stream runs one ADS stream of the configured protocol until it fails or
// ctx ends. progressed reports whether any response arrived, which resets
// the backoff.
func (c *Client) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (progressed bool, err error) {
	if c.cfg.Protocol == ProtocolSotW {
		return c.sotwStream(ctx, ads)
	}
	progressed, err = c.deltaStream(ctx, ads)
	if status.Code(err) == codes.Unimplemented {
		// A control plane that serves state of the world only (App Mesh
		// did): speak that from now on.
		c.log.Warn("the control plane does not serve delta xDS; using state of the world", "server", c.cfg.Server)
		c.cfg.Protocol = ProtocolSotW
		return c.sotwStream(ctx, ads)
	}
	return progressed, err
}

// sotwStream runs one state-of-the-world ADS stream.
func (c *Client) sotwStream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open ads stream: %w", err)
	}
	for _, t := range c.types {
		t.nonce = "" // nonces belong to a stream
	}
	// Clusters first, then listeners, as Envoy does; endpoints, routes and
	// secrets already known are re-requested at once so a restarted
	// server resends them.
	for _, url := range []string{ClusterType, EndpointType, ListenerType, RouteType, SecretType} {
		t := c.types[url]
		if !t.wildcard && len(t.names) == 0 {
			continue
		}
		if err := c.send(st, t, nil); err != nil {
			return false, err
		}
	}
	c.setConnected(true)
	defer c.setConnected(false)
	for {
		resp, err := st.Recv()
		if err != nil {
			return progressed, fmt.Errorf("receive: %w", err)
		}
		progressed = true
		t, ok := c.types[resp.GetTypeUrl()]
		if !ok {
			// Not a type weft asked for: logged and otherwise ignored.
			c.log.Warn("xds response of an unrequested type", "type", resp.GetTypeUrl())
			continue
		}
		t.nonce = resp.GetNonce()
		subs, applyErr := c.apply(ctx, t, resp)
		if applyErr != nil {
			c.Rejected.Add(1)
			c.log.Warn("xds update rejected", "type", short(t.url), "version", resp.GetVersionInfo(), "err", applyErr)
		} else {
			c.Accepted.Add(1)
			t.version = resp.GetVersionInfo()
			c.log.Debug("xds update accepted", "type", short(t.url), "version", t.version, "resources", len(resp.GetResources()))
		}
		if err := c.send(st, t, applyErr); err != nil {
			return progressed, err
		}
		for _, sub := range subs {
			dep := c.types[sub.url]
			if !slices.Equal(dep.names, sub.names) {
				dep.names = sub.names
				for n := range dep.resources {
					if _, keep := slices.BinarySearch(dep.names, n); !keep {
						delete(dep.resources, n)
					}
				}
				if err := c.send(st, dep, nil); err != nil {
					return progressed, err
				}
			}
		}
	}
}

func (c *Client) setConnected(v bool) {
	c.connected.Store(v)
	if c.OnConnect != nil {
		c.OnConnect(v)
	}
}

type subscription struct {
	url   string
	names []string
}

// apply decodes a response, merges it with the accepted state and hands
// the result to the handler. On success it commits the new state and
// returns the dependent subscriptions, if the type has some.
func (c *Client) apply(ctx context.Context, t *typeState, resp *discoveryv3.DiscoveryResponse) ([]subscription, error) {
	next := map[string]proto.Message{}
	if !t.wildcard {
		// RDS and EDS responses carry only what changed: keep the rest.
		for n, m := range t.resources {
			next[n] = m
		}
	}
	fresh := map[string]bool{}
	for i, a := range resp.GetResources() {
		m, name, err := decode(a, t.url)
		if err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		if fresh[name] {
			return nil, fmt.Errorf("duplicate resource %q", name)
		}
		fresh[name] = true
		if !t.wildcard {
			if _, ok := slices.BinarySearch(t.names, name); !ok {
				continue // not subscribed (any more): ignore, as Envoy does
			}
		}
		next[name] = m
	}
	return c.handOver(ctx, t, resp.GetVersionInfo(), next)
}

// handOver hands a type's merged resources to the handler; on success it
// commits them and returns the dependent subscriptions, if the type has
// some.
func (c *Client) handOver(ctx context.Context, t *typeState, v string, next map[string]proto.Message) ([]subscription, error) {
	names := make([]string, 0, len(next))
	for n := range next {
		names = append(names, n)
	}
	sort.Strings(names)
	var subs []subscription
	var err error
	switch t.url {
	case ClusterType:
		list := make([]*clusterv3.Cluster, 0, len(names))
		for _, n := range names {
			list = append(list, next[n].(*clusterv3.Cluster))
		}
		var eds []string
		eds, err = c.h.Clusters(ctx, v, list)
		subs = []subscription{{EndpointType, sorted(eds)}}
	case ListenerType:
		list := make([]*listenerv3.Listener, 0, len(names))
		for _, n := range names {
			list = append(list, next[n].(*listenerv3.Listener))
		}
		var rds []string
		rds, err = c.h.Listeners(ctx, v, list)
		subs = []subscription{{RouteType, sorted(rds)}}
	case EndpointType:
		list := make([]*endpointv3.ClusterLoadAssignment, 0, len(names))
		for _, n := range names {
			list = append(list, next[n].(*endpointv3.ClusterLoadAssignment))
		}
		err = c.h.Endpoints(ctx, v, list)
	case RouteType:
		list := make([]*routev3.RouteConfiguration, 0, len(names))
		for _, n := range names {
			list = append(list, next[n].(*routev3.RouteConfiguration))
		}
		err = c.h.Routes(ctx, v, list)
	case SecretType:
		sh, ok := c.h.(SecretHandler)
		if !ok {
			return nil, errors.New("secrets are not taken by this client")
		}
		list := make([]*tlsv3.Secret, 0, len(names))
		for _, n := range names {
			list = append(list, next[n].(*tlsv3.Secret))
		}
		err = sh.Secrets(ctx, v, list)
	}
	if sh, ok := c.h.(SecretHandler); ok && err == nil && (t.url == ClusterType || t.url == ListenerType) {
		subs = append(subs, subscription{SecretType, sorted(sh.SecretNames())})
	}
	if err != nil {
		return nil, err
	}
	t.resources = next
	return subs, nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return slices.Compact(s)
}

func decode(a *anypb.Any, url string) (proto.Message, string, error) {
	if a.GetTypeUrl() == resourceType {
		var r discoveryv3.Resource
		if err := a.UnmarshalTo(&r); err != nil {
			return nil, "", fmt.Errorf("decode Resource wrapper: %w", err)
		}
		a = r.GetResource()
	}
	if a.GetTypeUrl() != url {
		return nil, "", fmt.Errorf("type %s in a %s response", a.GetTypeUrl(), url)
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, "", fmt.Errorf("decode %s: %w", url, err)
	}
	var name string
	switch x := m.(type) {
	case *clusterv3.Cluster:
		name = x.GetName()
	case *listenerv3.Listener:
		name = x.GetName()
	case *routev3.RouteConfiguration:
		name = x.GetName()
	case *endpointv3.ClusterLoadAssignment:
		name = x.GetClusterName()
	case *tlsv3.Secret:
		name = x.GetName()
	}
	if name == "" {
		return nil, "", errors.New("resource without a name")
	}
	return m, name, nil
}

// send sends a request for t: an ACK when nack is nil, else a NACK that
// keeps the last accepted version and explains why.
func (c *Client) send(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, t *typeState, nack error) error {
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   t.version,
		Node:          c.cfg.Node,
		TypeUrl:       t.url,
		ResponseNonce: t.nonce,
	}
	if !t.wildcard {
		req.ResourceNames = t.names
	}
	if nack != nil {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	if err := st.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", short(t.url), streamEnd(err, st.Recv))
	}
	return nil
}

// streamEnd is the error a failed Send stands for: grpc-go's Send answers
// io.EOF when the stream has ended, and only Recv returns its status (the
// control plane's refusal with InvalidArgument, say, which must not be
// retried). Recv returns the responses still buffered first: a few at
// most, since the stream is over; after maxBuffered the Send's own error
// is kept.
func streamEnd[T any](err error, recv func() (T, error)) error {
	const maxBuffered = 64
	if !errors.Is(err, io.EOF) {
		return err
	}
	for range maxBuffered {
		if _, rerr := recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

func short(url string) string {
	switch url {
	case ClusterType:
		return "CDS"
	case EndpointType:
		return "EDS"
	case ListenerType:
		return "LDS"
	case RouteType:
		return "RDS"
	case SecretType:
		return "SDS"
	}
	return url
}
