// Package proxycmd holds the data plane's commands, shared by the weft
// binary (weft proxy, weft intercept) and the proxy-only one (weft-proxy
// proxy, weft-proxy intercept): their flags, the App Mesh environment
// variables they default from, and the start of the proxy.
package proxycmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/envvar"
	"github.com/weftmesh/weft/internal/proxy"
	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// Run runs the proxy until ctx ends. prog is how the usage names the
// command ("weft proxy"). -h prints the usage and returns flag.ErrHelp.
func Run(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) error {
	cfg, log, err := parse(ctx, prog, args, stderr)
	if err != nil {
		return err
	}
	tuneRuntime(cfg.Pprof)
	p, err := proxy.New(cfg, log)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// parse reads the flags and their environment variables into the
// proxy's configuration and its logger (on stderr).
func parse(ctx context.Context, prog string, args []string, stderr io.Writer) (proxy.Config, *slog.Logger, error) {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: "+prog+" [flags]\n\n"+
			"Runs the data plane for one virtual node (a sidecar) or virtual gateway: it asks\n"+
			"the control plane (--xds) for its configuration over ADS, as Envoy does, and serves\n"+
			"its listeners; the admin listener answers /ready, /stats, /config_dump like Envoy's.\n"+
			"Flags default from the App Mesh Envoy image's variables (APPMESH_RESOURCE_ARN,\n"+
			"APPMESH_XDS_ENDPOINT, ENVOY_ADMIN_ACCESS_PORT, ENVOY_LOG_LEVEL, ...).\n\nflags:")
		fs.PrintDefaults()
	}
	var cfg proxy.Config
	arn := envvar.Or("APPMESH_RESOURCE_ARN", envvar.Or("APPMESH_RESOURCE_NAME", envvar.Or("APPMESH_VIRTUAL_NODE_NAME", "")))
	fs.StringVar(&cfg.ResourceARN, "resource-arn", arn, "virtual node or gateway ARN, or mesh/<mesh>/virtualNode/<name> (env APPMESH_RESOURCE_ARN)")
	fs.StringVar(&cfg.NodeCluster, "node-cluster", envvar.Or("APPMESH_RESOURCE_CLUSTER", envvar.Or("APPMESH_VIRTUAL_NODE_CLUSTER", "")), "xDS node.cluster; defaults to the ARN (env APPMESH_RESOURCE_CLUSTER)")
	fs.StringVar(&cfg.XDS, "xds", envvar.Or("APPMESH_XDS_ENDPOINT", "127.0.0.1:15010"), "control plane ADS address, host:port, or several host:port,host:port,... (or a name with several A records) of weft replicas to fail over between; plaintext gRPC unless --xds-ca (env APPMESH_XDS_ENDPOINT)")
	fs.StringVar(&cfg.XDSProtocol, "xds-protocol", envvar.Or("WEFT_XDS_PROTOCOL", "delta"), "xDS protocol: delta (incremental: only what changed is sent) or sotw (state of the world); delta falls back to sotw with a control plane that lacks it (env WEFT_XDS_PROTOCOL)")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", envvar.Or("WEFT_PROXY_ADMIN_ADDR", defaultAdminAddr()), "admin listener; empty disables it (env WEFT_PROXY_ADMIN_ADDR; ENVOY_ADMIN_ACCESS_PORT moves the port of the default 127.0.0.1:9901)")
	fs.StringVar(&cfg.StatsAddr, "stats-addr", envvar.Or("WEFT_PROXY_STATS_ADDR", ""), "listener serving only /ready, /stats and /stats/prometheus, for probes and Prometheus from other hosts while the admin listener stays on loopback, e.g. 0.0.0.0:9902; empty: none (env WEFT_PROXY_STATS_ADDR)")
	concurrency := fs.Int("concurrency", atoiOr(envvar.Or("ENVOY_CONCURRENCY", ""), 0), "threads serving traffic (GOMAXPROCS); 0 uses every core, as Envoy's --concurrency (env ENVOY_CONCURRENCY)")
	fs.StringVar(&cfg.SDSSocket, "sds-socket", envvar.Or("APPMESH_SDS_SOCKET_PATH", ""), "Unix socket of an SDS server (e.g. the SPIRE agent) serving the secrets on cluster static_cluster_sds_unix_socket; tells weft server so in the node metadata (env APPMESH_SDS_SOCKET_PATH)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go profiles under /debug/pprof/ on the admin listener")
	fs.BoolVar(&cfg.ReleaseStartupPages, "release-startup-pages", true, "once configured, release the pages of the weft binary that start-up left resident (Linux)")
	tokenFile := fs.String("xds-token-file", envvar.Or("WEFT_XDS_TOKEN_FILE", ""), "file holding a join token (weft token create), sent on the xDS stream as its proof of identity (env WEFT_XDS_TOKEN_FILE)")
	xdsCA := fs.String("xds-ca", envvar.Or("WEFT_XDS_CA", ""), "PEM CA file: reach xDS over TLS, trusting that CA (env WEFT_XDS_CA)")
	xdsCert := fs.String("xds-cert", envvar.Or("WEFT_XDS_CERT", ""), "PEM client certificate for xDS over TLS, issued by weft's CA for this node (env WEFT_XDS_CERT)")
	xdsKey := fs.String("xds-key", envvar.Or("WEFT_XDS_KEY", ""), "PEM key of --xds-cert (env WEFT_XDS_KEY)")
	level := fs.String("log-level", envvar.Or("ENVOY_LOG_LEVEL", "info"), "debug, info, warn or error, or Envoy's trace, warning, critical, off (env ENVOY_LOG_LEVEL)")
	var envErrs []error
	maxConns := fs.Int("listener-max-connections", envvar.Int("WEFT_PROXY_LISTENER_MAX_CONNECTIONS", proxy.DefaultListenerMaxConnections, &envErrs),
		"open downstream connections per listener; more are closed at once (downstream_cx_overflow); 0 for no cap (env WEFT_PROXY_LISTENER_MAX_CONNECTIONS)")
	headersTimeout := fs.Duration("request-headers-timeout", envvar.Duration("WEFT_PROXY_REQUEST_HEADERS_TIMEOUT", httpconn.DefaultRequestHeadersTimeout, &envErrs),
		"time from a request's first byte to the end of its head, and for a new connection's first byte, unless the HCM sets request_headers_timeout; 0 for none (env WEFT_PROXY_REQUEST_HEADERS_TIMEOUT)")
	drainTime := fs.Duration("drain-time", envvar.Duration("WEFT_PROXY_DRAIN_TIME", proxy.DefaultDrainTime, &envErrs),
		"how long the connections of a removed listener or of a changed or removed filter chain have to finish before they are closed, as Envoy's --drain-time-s; 0 closes them at once (env WEFT_PROXY_DRAIN_TIME)")
	parkAfter := fs.Duration("park-idle-after", envvar.Duration("WEFT_PROXY_PARK_IDLE_AFTER", httpconn.DefaultParkIdleAfter, &envErrs),
		"how long a keep-alive HTTP/1.1 connection waits for its next request holding a goroutine before it parks in an epoll set without one (Linux), freeing the goroutine's stack; 0 never parks, 1ns parks at once (env WEFT_PROXY_PARK_IDLE_AFTER)")
	evloopOn := fs.Bool("evloop", envvar.Bool("WEFT_PROXY_EVLOOP", true, &envErrs),
		"serve HTTP/1.1 listeners, plaintext and TLS, on event loops (Linux; one per core) where they can serve them as the goroutine path does; other listeners, connections and requests stay on the goroutine path; false serves everything on goroutines. No effect on other systems (env WEFT_PROXY_EVLOOP=false)")
	h2loops := fs.Bool("h2loops", envvar.Bool("WEFT_PROXY_H2LOOPS", true, &envErrs),
		"with --evloop, serve HTTP/2 connections (h2c with prior knowledge, and over TLS) on the event loops too where every route of the listener goes to a cluster the loops serve (HTTP/1.1, or HTTP/2 plaintext or over TLS); false hands them to the goroutine path (env WEFT_PROXY_H2LOOPS=0)")
	// The old name, from when the loops were opt-in; they are the
	// default now, so it is accepted for the scripts that pass it and
	// changes nothing (nor does WEFT_PROXY_EXPERIMENTAL_EVLOOP).
	fs.Bool("experimental-evloop", false, "old name from when the event loops were opt-in; accepted and ignored (see --evloop)")
	ingressPort := fs.Uint("ingress-port", uint(envvar.Int("APPMESH_ENVOY_INGRESS_PORT", 15000, &envErrs)),
		"port the traffic interception sends inbound traffic to, as weft intercept's --proxy-ingress-port and ECS's ProxyIngressPort; weft server puts the ingress listener there (env APPMESH_ENVOY_INGRESS_PORT)")
	egressPort := fs.Uint("egress-port", uint(envvar.Int("APPMESH_ENVOY_EGRESS_PORT", 15001, &envErrs)),
		"port the traffic interception sends outbound traffic to, as weft intercept's --proxy-egress-port and ECS's ProxyEgressPort; weft server puts the egress listener there (env APPMESH_ENVOY_EGRESS_PORT)")
	fetchTimeout := fs.String("initial-fetch-timeout", envvar.Or("ENVOY_INITIAL_FETCH_TIMEOUT", "0"),
		"how long to wait for the first clusters and listeners before going LIVE without them, seconds or a duration (10, 10s); 0 waits for them, as the App Mesh image's default (env ENVOY_INITIAL_FETCH_TIMEOUT)")
	obsFlags := addObservabilityFlags(fs)
	if err := fs.Parse(args); err != nil {
		return proxy.Config{}, nil, err
	}
	if cfg.XDSProtocol != "delta" && cfg.XDSProtocol != "sotw" {
		envErrs = append(envErrs, fmt.Errorf("--xds-protocol %q: want delta or sotw", cfg.XDSProtocol))
	}
	if err := errors.Join(envErrs...); err != nil {
		return proxy.Config{}, nil, err
	}
	if *ingressPort < 1 || *ingressPort > 65535 || *egressPort < 1 || *egressPort > 65535 || *ingressPort == *egressPort {
		return proxy.Config{}, nil, fmt.Errorf("--ingress-port %d, --egress-port %d: want two different ports 1-65535", *ingressPort, *egressPort)
	}
	if *ingressPort != 15000 {
		cfg.IngressPort = uint32(*ingressPort)
	}
	if *egressPort != 15001 {
		cfg.EgressPort = uint32(*egressPort)
	}
	var err error
	if cfg.InitialFetchTimeout, err = seconds(*fetchTimeout); err != nil {
		return proxy.Config{}, nil, fmt.Errorf("--initial-fetch-timeout (ENVOY_INITIAL_FETCH_TIMEOUT): %w", err)
	}
	obs, err := obsFlags.resolve(cfg.ResourceARN)
	if err != nil {
		return proxy.Config{}, nil, err
	}
	cfg.Observability = obs
	cfg.ListenerMaxConnections = *maxConns
	if *maxConns <= 0 {
		cfg.ListenerMaxConnections = -1 // no cap
	}
	cfg.RequestHeadersTimeout = *headersTimeout
	if *headersTimeout <= 0 {
		cfg.RequestHeadersTimeout = -1 // none
	}
	cfg.DrainTime = *drainTime
	cfg.Goroutines = !*evloopOn
	cfg.H2Goroutines = !*h2loops
	cfg.ParkIdleAfter = *parkAfter
	if *parkAfter <= 0 {
		cfg.ParkIdleAfter = -1 // never
	}
	if *drainTime <= 0 {
		cfg.DrainTime = -1 // at once
	}
	if *concurrency > 0 {
		runtime.GOMAXPROCS(*concurrency)
	}
	lv, err := logLevel(*level)
	if err != nil {
		return proxy.Config{}, nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	tlsOn := *xdsCA != "" || *xdsCert != "" || *xdsKey != ""
	if tlsOn {
		opts, err := xdsclient.TLSOptions(*xdsCA, *xdsCert, *xdsKey)
		if err != nil {
			return proxy.Config{}, nil, err
		}
		cfg.XDSDialOptions = append(cfg.XDSDialOptions, opts...)
	}
	if *tokenFile != "" {
		tf := xdsclient.TokenFile{Path: *tokenFile, Secure: tlsOn}
		if _, err := tf.GetRequestMetadata(ctx); err != nil {
			return proxy.Config{}, nil, err
		}
		cfg.XDSDialOptions = append(cfg.XDSDialOptions, grpc.WithPerRPCCredentials(tf))
		if !tlsOn && !loopbackHost(cfg.XDS) {
			log.Warn("the join token is sent to xDS without TLS: anyone on the path can read it; give --xds-ca on a shared network", "xds", cfg.XDS)
		}
	}
	return cfg, log, nil
}

// defaultAdminAddr is 127.0.0.1:9901, or 127.0.0.1:$ENVOY_ADMIN_ACCESS_PORT
// as the App Mesh Envoy image reads it.
func defaultAdminAddr() string {
	if port, ok := envvar.Uint("ENVOY_ADMIN_ACCESS_PORT"); ok && port > 0 && port < 1<<16 {
		return "127.0.0.1:" + strconv.FormatUint(uint64(port), 10)
	}
	return "127.0.0.1:9901"
}

// seconds reads a non-negative time as the App Mesh image's variables give
// it, whole seconds ("10"), or as a Go duration ("10s", "1m").
func seconds(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want whole seconds or a duration such as 10s, 0 for none", s)
	}
	return d, nil
}

// atoiOr parses s, or returns def when s is empty or not a number.
func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// logLevel reads a log level in slog's words or in Envoy's, since
// ENVOY_LOG_LEVEL is set for Envoy in App Mesh task definitions.
func logLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace":
		return slog.LevelDebug, nil
	case "warning":
		return slog.LevelWarn, nil
	case "critical":
		return slog.LevelError, nil
	case "off":
		return slog.LevelError + 4, nil
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn, error, trace, warning, critical or off", s)
	}
	return lv, nil
}

// loopbackHost reports whether host:port names this machine's loopback.
func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
