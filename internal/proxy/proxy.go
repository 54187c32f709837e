// Package proxy is weft proxy, a Go data plane for App Mesh virtual nodes
// and gateways. It is an xDS client like any other (it imports nothing
// from weft's server side) and implements the Envoy configuration that
// weft's translator, and App Mesh before it, emits.
//
// The flow:
//
//	xdsclient (ADS) ──CDS/EDS──▶ cluster.Manager (hosts, LB, health, outlier)
//	          │      ──LDS────▶ listener.Listener ──▶ httpconn.HCM ──▶ cluster
//	          │                                    └─▶ tcpproxy.Proxy ─▶ cluster
//	          └──────RDS────▶ route tables (looked up per request)
//	admin (127.0.0.1:9901): /ready /server_info /stats /config_dump /clusters
//
// Every update is built completely, then swapped in, then what it
// replaced is stopped; an update that cannot be built is NACKed and the
// previous configuration keeps serving.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/admin"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/lrs"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// Version is reported in /server_info and the xDS node.
const Version = "weft-proxy/0.1"

// DefaultListenerMaxConnections caps each listener's open downstream
// connections unless Config says otherwise. Envoy has no cap unless one
// is set (per listener with the runtime key
// envoy.resource_limits.listener.<name>.connection_limit, or for the
// process in the overload manager); weft proxy sets one so that a flood
// of connections cannot use up the process's file descriptors, which
// the admin listener, upstream connections and xDS need too.
const DefaultListenerMaxConnections = 16384

// DefaultDrainTime is Envoy's default --drain-time-s: how long draining
// connections have to finish before they are closed.
const DefaultDrainTime = listener.DefaultDrainTime

// Limits of the admin and stats listeners: their clients are a few
// probes, scrapers and operators.
const (
	// adminMaxConns caps each listener's open connections; beyond, new
	// ones wait in the kernel's backlog until one closes.
	adminMaxConns = 64
	// adminReadTimeout bounds the reading of a request (they are GETs).
	adminReadTimeout = 10 * time.Second
	// adminIdleTimeout closes a keep-alive connection without requests.
	adminIdleTimeout = 2 * time.Minute
	// statsWriteTimeout bounds the writing of a stats answer.
	statsWriteTimeout = time.Minute
)

// Config configures a proxy.
type Config struct {
	ResourceARN string // node.id: the virtual node or gateway ARN (or mesh/<m>/virtualNode/<n>)
	NodeCluster string // node.cluster; defaults to ResourceARN
	XDS         string // host:port of the ADS server
	// XDSProtocol is xdsclient.ProtocolDelta (the default when empty) or
	// xdsclient.ProtocolSotW.
	XDSProtocol string
	AdminAddr   string // "" disables the admin listener
	// StatsAddr, when set, serves only /ready, /stats and
	// /stats/prometheus (admin.StatsHandler): a listener for health probes
	// and metrics scrapers that may face the network while the admin
	// listener, which shows the configuration, stays on loopback.
	StatsAddr string
	// XDSDialOptions add credentials to the ADS connection (TLS, a join
	// token); see xdsclient.Config.DialOptions.
	XDSDialOptions []grpc.DialOption
	// XDSBackoffBase, when set, replaces the 500 ms reconnect backoff base
	// (tests use a short one).
	XDSBackoffBase time.Duration
	// Pprof serves Go profiles under /debug/pprof/ on the admin listener.
	Pprof bool
	// ReleaseStartupPages releases the executable's resident pages once
	// the first configuration is in force, again when later updates
	// settle, and every pagesRefresh (package exepages; pages.go). For a
	// process of its own: in a test binary it would release the pages of
	// every test.
	ReleaseStartupPages bool
	// RequestHeadersTimeout bounds how long a downstream request head may
	// take from its first byte when the HCM sets no
	// request_headers_timeout; 0 uses httpconn.DefaultRequestHeadersTimeout,
	// negative is none.
	RequestHeadersTimeout time.Duration
	// ListenerMaxConnections caps the open downstream connections of each
	// listener; 0 uses DefaultListenerMaxConnections, negative is no cap.
	// Connections over the cap are closed at once and counted in
	// listener.<address>.downstream_cx_overflow.
	ListenerMaxConnections int
	// DrainTime is how long the connections of a removed listener or of
	// a changed or removed filter chain have to finish before they are
	// closed (Envoy's --drain-time-s); 0 uses DefaultDrainTime, negative
	// closes them at once.
	DrainTime time.Duration
	// ParkIdleAfter is how long a keep-alive HTTP/1.1 downstream
	// connection waits between requests on a goroutine of its own before
	// it parks in the proxy's epoll set without one (Linux); 0 uses
	// httpconn.DefaultParkIdleAfter, negative never parks.
	ParkIdleAfter time.Duration
	// Goroutines serves every listener on the goroutine path (weft proxy
	// --evloop=false). By default, on Linux, HTTP/1.1 listeners are
	// served by event loops (package evloop) where the loops can serve
	// them as the goroutine path does (loops.go); other listeners, and
	// the connections the loops hand back, stay on the goroutine path.
	// Other systems have only the goroutine path.
	Goroutines bool
	// H2Goroutines hands every HTTP/2 connection to the goroutine path
	// (weft proxy --h2loops=false, env WEFT_PROXY_H2LOOPS=0). By default
	// the loops serve an HTTP/2 connection of their listeners too (h2c
	// with prior knowledge, or over TLS), when every route of the
	// listener is one the loops forward, to an HTTP/1.1 cluster or an
	// HTTP/2 one (loops_h2.go; the HTTP/2 upstreams are the loops' own
	// connections), and HTTP/1.1 requests to a plaintext HTTP/2 cluster
	// go out over those connections too (with it, to the goroutine path).
	H2Goroutines bool
	// SDSSocket is the Unix socket of an SDS server (the App Mesh agent's
	// APPMESH_SDS_SOCKET_PATH) serving the secrets that sds_config names
	// as cluster static_cluster_sds_unix_socket. When set, the node's
	// metadata says "weft.sds_socket": true.
	SDSSocket string
	// InitialFetchTimeout bounds how long the proxy waits for its first
	// clusters and listeners (CDS and LDS) before going LIVE without
	// them: the App Mesh image's ENVOY_INITIAL_FETCH_TIMEOUT, which it put
	// on cds_config and lds_config. 0 (the image's default) waits for
	// them for ever. The endpoints, routes and secrets they name are
	// waited for 15 s at most after them, as before.
	InitialFetchTimeout time.Duration
	// IngressPort and EgressPort are where the traffic interception
	// (ECS's proxy configuration, weft intercept) sends inbound and
	// outbound traffic; 0 leaves App Mesh's 15000 and 15001. The node
	// metadata tells weft server, which puts the listeners there.
	IngressPort, EgressPort uint32
	// Observability: stats tags, a StatsD sink and tracing (see
	// observability.go; ObservabilityFromEnv reads App Mesh's variables).
	Observability Observability
	// AccessLogBuffering is how the access log sinks buffer lines for
	// their writers (accesslog.Buffering; the zero value is the
	// defaults): requests never wait for a sink, and a sink that cannot
	// keep up loses lines, counted in filesystem.write_dropped.
	AccessLogBuffering accesslog.Buffering
}

// Proxy is one weft proxy. Create with New, run with Run.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	node  *corev3.Node
	start time.Time

	Stats    *stats.Store
	sinks    *accesslog.Sinks
	clusters *cluster.Manager
	tls      *tlsctx.Store
	server   *httpconn.Server
	xds      *xdsclient.Client
	ids      atomic.Uint64

	routes atomic.Pointer[map[string]*route.Config]

	mu        sync.Mutex // serialises config application and dump reads
	listeners map[string]*listener.Listener
	lpb       map[string]*listenerv3.Listener
	rpb       map[string]*routev3.RouteConfiguration
	versions  map[string]string    // accepted version by type
	updated   map[string]time.Time // last accepted update by type
	rdsWant   []string
	edsWant   []string
	gotLDS    bool
	gotCDS    bool

	live      atomic.Bool
	changed   chan struct{} // an update was accepted; buffered 1, sent to by accepted
	liveTimer *time.Timer   // initial fetch timeout; protected by mu
	bootTimer *time.Timer   // Config.InitialFetchTimeout for CDS and LDS; protected by mu
	// warmL holds updated listener configurations waiting for their
	// secrets while the one in force keeps serving; protected by mu.
	warmL     map[string]warming
	warmTimer *time.Timer // bounds warming; protected by mu
	// secretTimer checks LIVE again when a secret's initial_fetch_timeout
	// passes; protected by mu.
	secretTimer *time.Timer
	liveCh      chan struct{}
	liveOnce    sync.Once
	connected   *stats.Gauge
	adminAddr   atomic.Pointer[string]
	statsAddr   atomic.Pointer[string]
	obs         obsState
}

// New returns a proxy; nothing runs until Run.
func New(cfg Config, log *slog.Logger) (*Proxy, error) {
	if cfg.ResourceARN == "" {
		return nil, errors.New("no resource: set --resource-arn (or APPMESH_RESOURCE_ARN) to the virtual node or gateway, e.g. mesh/color-mesh/virtualNode/red")
	}
	if cfg.XDS == "" {
		return nil, errors.New("the xDS endpoint (APPMESH_XDS_ENDPOINT or --xds) must be set")
	}
	if cfg.NodeCluster == "" {
		cfg.NodeCluster = cfg.ResourceARN
	}
	if cfg.ListenerMaxConnections == 0 {
		cfg.ListenerMaxConnections = DefaultListenerMaxConnections
	}
	p := &Proxy{cfg: cfg, log: log.With("node", cfg.ResourceARN), start: time.Now(),
		Stats:     stats.NewStoreWithTags(cfg.Observability.StatsTags...),
		listeners: map[string]*listener.Listener{}, lpb: map[string]*listenerv3.Listener{},
		rpb: map[string]*routev3.RouteConfiguration{}, versions: map[string]string{},
		updated: map[string]time.Time{}, liveCh: make(chan struct{}), changed: make(chan struct{}, 1),
		warmL: map[string]warming{}}
	p.sinks = accesslog.NewSinks(cfg.AccessLogBuffering, p.Stats)
	p.node = &corev3.Node{Id: cfg.ResourceARN, Cluster: cfg.NodeCluster, UserAgentName: "weft-proxy",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: Version}}
	md := map[string]*structpb.Value{}
	if cfg.SDSSocket != "" {
		md[SDSSocketMetadata] = structpb.NewBoolValue(true)
	}
	if cfg.IngressPort != 0 {
		md[IngressPortMetadata] = structpb.NewNumberValue(float64(cfg.IngressPort))
	}
	if cfg.EgressPort != 0 {
		md[EgressPortMetadata] = structpb.NewNumberValue(float64(cfg.EgressPort))
	}
	if len(md) > 0 {
		p.node.Metadata = &structpb.Struct{Fields: md}
	}
	p.tls = tlsctx.NewStore(p.Stats, p.log, cfg.SDSSocket != "")
	empty := map[string]*route.Config{}
	p.routes.Store(&empty)
	p.connected = p.Stats.Scope("control_plane.", "envoy_control_plane_").Gauge("connected_state")
	return p, nil
}

// Run runs the proxy until ctx ends and returns once everything it started
// has stopped.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.clusters = cluster.NewManager(ctx, p.Stats, p.log)
	p.clusters.SetTLS(p.tls)
	p.server = httpconn.NewServer(p.log, httpconn.Options{ParkIdleAfter: p.cfg.ParkIdleAfter})
	p.registerServerStats()
	if err := p.startObservability(ctx); err != nil {
		p.clusters.Close()
		return err
	}
	p.xds = xdsclient.New(xdsclient.Config{Server: p.cfg.XDS, Node: p.node, Protocol: p.cfg.XDSProtocol, BackoffBase: p.cfg.XDSBackoffBase, DialOptions: p.cfg.XDSDialOptions}, p, p.log)
	p.xds.OnConnect = func(up bool) {
		if up {
			p.connected.Set(1)
		} else {
			p.connected.Set(0)
		}
	}

	var servers []*http.Server
	var wg sync.WaitGroup
	errc := make(chan error, 5)
	for _, l := range []struct {
		name, addr   string
		handler      http.Handler
		bound        *atomic.Pointer[string]
		writeTimeout time.Duration // 0: none (the admin's pprof profiles take as long as asked)
	}{
		{"admin", p.cfg.AdminAddr, admin.Handler(p.adminSource()), &p.adminAddr, 0},
		{"stats", p.cfg.StatsAddr, admin.StatsHandler(p.adminSource()), &p.statsAddr, statsWriteTimeout},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			for _, srv := range servers {
				srv.Close()
			}
			wg.Wait()
			return fmt.Errorf("%s listener %s: %w", l.name, l.addr, err)
		}
		a := ln.Addr().String()
		l.bound.Store(&a)
		ln = netutil.LimitListener(ln, adminMaxConns)
		srv := &http.Server{Handler: l.handler, ReadHeaderTimeout: adminReadTimeout, ReadTimeout: adminReadTimeout, WriteTimeout: l.writeTimeout, IdleTimeout: adminIdleTimeout}
		servers = append(servers, srv)
		wg.Add(1)
		go func() { // an admin or stats server; ends when srv is closed below
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
	}
	if p.cfg.ReleaseStartupPages {
		wg.Add(1)
		go func() { // ends with ctx
			defer wg.Done()
			p.releasePages(ctx)
		}()
	}
	wg.Add(1)
	go func() { // TLS file poller; ends with ctx
		defer wg.Done()
		p.tls.Run(ctx)
	}()
	if p.cfg.SDSSocket != "" {
		sds := tlsctx.NewSDSClient(p.cfg.SDSSocket, p.node, p.tls, p.log)
		sds.OnUpdate = p.sdsUpdated
		wg.Add(1)
		go func() { // SDS socket client; ends with ctx
			defer wg.Done()
			sds.Run(ctx)
		}()
	}
	wg.Add(2)
	go func() { // HTTP connection manager server; ends with ctx
		defer wg.Done()
		if err := p.server.Run(ctx); err != nil {
			errc <- fmt.Errorf("http server: %w", err)
		}
	}()
	go func() { // xDS client; ends with ctx
		defer wg.Done()
		if err := p.xds.Run(ctx); err != nil {
			errc <- err
		}
	}()
	if t := p.cfg.InitialFetchTimeout; t > 0 {
		p.mu.Lock()
		p.bootTimer = time.AfterFunc(t, func() { // one-shot; stopped by goLive or by Run on exit
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.live.Load() && (!p.gotCDS || !p.gotLDS) {
				p.log.Warn("initial fetch timeout: going LIVE without clusters or listeners from the control plane", "timeout", t, "clusters", p.gotCDS, "listeners", p.gotLDS)
				p.goLive()
			}
		})
		p.mu.Unlock()
	}
	wg.Add(1)
	go func() { // load reports to the control plane; ends with ctx
		defer wg.Done()
		lcfg := lrs.Config{Server: p.cfg.XDS, Node: p.node, DialOptions: p.cfg.XDSDialOptions, BackoffBase: p.cfg.XDSBackoffBase}
		if err := lrs.Run(ctx, lcfg, loadSource{p.clusters, p.Stats}, p.log.With("component", "lrs")); err != nil {
			errc <- err
		}
	}()
	p.log.Info("weft proxy started", "xds", p.cfg.XDS, "admin", p.AdminAddr()) // bound: --admin-addr 127.0.0.1:0 names its port here
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	// Shutdown: stop accepting, then wait for the parts.
	p.mu.Lock()
	for _, l := range p.listeners {
		l.Stop()
	}
	p.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Close()
	}
	wg.Wait()
	p.mu.Lock()
	for _, l := range p.listeners {
		l.Wait()
	}
	if p.liveTimer != nil {
		p.liveTimer.Stop()
	}
	if p.bootTimer != nil {
		p.bootTimer.Stop()
	}
	if p.secretTimer != nil {
		p.secretTimer.Stop()
	}
	if p.warmTimer != nil {
		p.warmTimer.Stop()
	}
	p.mu.Unlock()
	p.stopObservability() // after the listeners: every span has ended
	p.clusters.Close()
	if cerr := p.sinks.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (p *Proxy) registerServerStats() {
	sc := p.Stats.Scope("server.", "envoy_server_")
	sc.GaugeFunc("live", func() int64 {
		if p.live.Load() {
			return 1
		}
		return 0
	})
	sc.GaugeFunc("state", func() int64 { // Envoy: 0 LIVE, 2 PRE_INITIALIZING
		if p.live.Load() {
			return 0
		}
		return 2
	})
	sc.GaugeFunc("uptime", func() int64 { return int64(time.Since(p.start).Seconds()) })
	sc.GaugeFunc("total_connections", func() int64 { return int64(p.ids.Load()) })
	lm := p.Stats.Scope("listener_manager.", "envoy_listener_manager_")
	lm.GaugeFunc("total_listeners_active", func() int64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return int64(len(p.listeners))
	})
}

// WaitLive waits until the first configuration is complete (LIVE).
func (p *Proxy) WaitLive(ctx context.Context) error {
	select {
	case <-p.liveCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StatsAddr is the bound stats address, once Run has bound it.
func (p *Proxy) StatsAddr() string {
	if a := p.statsAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// AdminAddr is the bound admin address, once Run has bound it.
func (p *Proxy) AdminAddr() string {
	if a := p.adminAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// ListenerAddr returns the bound address of a listener, or "".
func (p *Proxy) ListenerAddr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.listeners[name]; ok {
		return l.Addr().String()
	}
	return ""
}

// Connected reports whether the ADS stream is up.
func (p *Proxy) Connected() bool { return p.xds != nil && p.xds.Connected() }

// Route implements httpconn.Routes.
func (p *Proxy) Route(name string) *route.Config { return (*p.routes.Load())[name] }

func (p *Proxy) accepted(typ, version string) {
	p.versions[typ] = version
	p.updated[typ] = time.Now()
	p.checkLive()
	select {
	case p.changed <- struct{}{}:
	default: // one pending signal is enough
	}
}

// initialFetchTimeout is how long the proxy waits for the endpoint and
// route resources its clusters and listeners name before it goes LIVE
// without them; Envoy's default initial_fetch_timeout.
const initialFetchTimeout = 15 * time.Second

// checkLive turns the proxy LIVE once clusters and listeners have arrived
// and every endpoint and route resource they name has too, or
// initialFetchTimeout after clusters and listeners. Called with mu.
func (p *Proxy) checkLive() {
	if p.live.Load() || !p.gotCDS || !p.gotLDS {
		return
	}
	// Secrets: a listener or cluster whose secret has not arrived refuses
	// its handshakes (never plaintext), and the proxy is not LIVE until
	// they arrive or the initial fetch timeout passes.
	if p.liveTimer == nil {
		p.liveTimer = time.AfterFunc(initialFetchTimeout, func() { // one-shot; stopped by Run on exit
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.live.Load() {
				p.log.Warn("initial fetch timeout: going LIVE without every route and endpoint resource")
				p.goLive()
			}
		})
	}
	for _, n := range p.rdsWant {
		if _, ok := p.rpb[n]; !ok {
			return
		}
	}
	have := map[string]bool{}
	for _, la := range p.clusters.Endpoints() {
		have[la.GetClusterName()] = true
	}
	for _, n := range p.edsWant {
		if !have[n] {
			return
		}
	}
	if !p.secretsArrived() {
		return
	}
	p.log.Info("configuration complete: LIVE")
	p.goLive()
}

func (p *Proxy) goLive() {
	p.live.Store(true)
	p.liveOnce.Do(func() { close(p.liveCh) })
	if p.liveTimer != nil {
		p.liveTimer.Stop()
	}
	if p.bootTimer != nil {
		p.bootTimer.Stop()
	}
}
