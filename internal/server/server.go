// Package server assembles the control plane: it opens the store and runs
// the API listener (App Mesh, Cloud Map, health and status endpoints), the
// DNS server and the xDS server until its context ends.
package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/api/stsapi"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery/remote"
	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/storeurl"
	"github.com/weftmesh/weft/internal/xds/lrs"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Config is what `weft server` is told by its flags.
type Config struct {
	APIAddr string // host:port of the API listener
	DataDir string // directory holding the embedded store
	// Store, when set, is the store's URL (storeurl: etcd://host:2379,...
	// for several replicas on one etcd cluster); "" is the embedded store
	// in DataDir. Etcd holds etcd's TLS and credentials.
	Store     string
	Etcd      storeurl.Etcd
	Region    string // region written into ARNs
	AccountID string // account that owns resources by default: 12 digits
	// Limits are the App Mesh quotas (a field of zero: no limit); nil
	// means App Mesh's defaults.
	Limits *appmesh.Limits
	// CloudMapLimits are the Cloud Map quotas (a field of zero: no
	// limit); nil means Cloud Map's defaults.
	CloudMapLimits *cloudmap.Limits
	// DNSAddr is host:port of the DNS server for Cloud Map's DNS
	// namespaces (UDP and TCP); "" runs none.
	DNSAddr string
	// DNSUpstreams answer the names the DNS server is not authoritative
	// for; none: such queries are REFUSED.
	DNSUpstreams []string
	// XDSAddr is host:port of the xDS (ADS) listener; "" runs none.
	XDSAddr string
	// XDSTLSCert and XDSTLSKey, PEM files, make the xDS listener TLS, as
	// the stock App Mesh Envoy image expects.
	XDSTLSCert, XDSTLSKey string
	// API bounds the API listener's connections; zero fields take the
	// defaults (DefaultAPIReadTimeout, ...).
	API APILimits
	// XDS bounds the xDS server's streams and logs; zero fields take the
	// defaults (xdsserver.DefaultMaxStreams, ...).
	XDS xdsserver.Limits
	// XDSMaxConns caps the xDS listener's connections from peers other
	// than loopback (zero: DefaultXDSMaxConns).
	XDSMaxConns int
	// XDSHandshakeTimeout bounds a new xDS connection's handshakes (zero:
	// DefaultXDSHandshakeTimeout).
	XDSHandshakeTimeout time.Duration
	// LRS bounds the load reporting service on the xDS listener and sets
	// the interval proxies report at; zero fields take the defaults.
	LRS lrs.Limits
	// DNS bounds the DNS server: answer sizes, response rate, who may use
	// the upstreams. Zero fields take the defaults.
	DNS dns.Limits
	// AuthFile is the credentials file (access keys and what each may
	// do): with one, every API request must be SigV4-signed by one of its
	// keys and every xDS stream must prove its identity.
	AuthFile string
	// Insecure lets the API and xDS listen on non-loopback addresses
	// without a credentials file.
	Insecure bool
	// XDSClientCAs, when set, returns weft's CA pool: xDS over TLS then
	// verifies client certificates against it, and one whose SPIFFE URI
	// names the node proves the stream's identity. Run sets it to the
	// mesh CA's pool.
	XDSClientCAs func() *x509.CertPool
	// XDSInsecure sends leaf certificates to xDS streams that proved no
	// identity although the xDS listener is not on loopback.
	XDSInsecure bool
	// ProxyTracing, when set, is the tracer every proxy gets in its HTTP
	// connection managers' tracing blocks (weft server --proxy-tracing).
	ProxyTracing *translate.MeshTracing

	// The mesh's CA (internal/ca): created in the store at first start,
	// or imported from CACertFile and CAKeyFile (PEM). TrustDomain
	// (ca.DefaultTrustDomain when empty) and CertLifetime
	// (ca.DefaultLeafLifetime when 0) shape the proxies' certificates.
	CACertFile, CAKeyFile string
	TrustDomain           string
	CertLifetime          time.Duration

	// CloudMapRemote names remote Cloud Maps (AWS's, another weft's) that
	// resolve the awsCloudMap service discovery of some namespaces.
	CloudMapRemote remote.Config
	// OTLPEndpoint, when set, exports a trace of every API write (the
	// request, its validation, its store commit) over OTLP/gRPC: a URL,
	// http:// for plaintext, or host:port (TLS; plaintext on loopback).
	OTLPEndpoint string
	// streamsStop, closed when the API server starts shutting down, ends
	// long-lived responses (the console's event streams). Set by Run.
	streamsStop <-chan struct{}
	// xdsObserver, set by Run with an OTLP endpoint, traces pushes.
	xdsObserver xdsserver.Observer
	// skipped, set by Run, counts the stored records each reader leaves
	// out (skippedBy); nil: none is counted.
	skipped *prometheus.CounterVec
}

// Readers of the store that leave out the records they cannot use: the
// values of weft_store_records_skipped_total's reader label.
const (
	readerXDS = "xds" // the xDS server's core and its Cloud Map index
	readerDNS = "dns" // the DNS server's Cloud Map index
	readerAPI = "api" // the App Mesh and Cloud Map APIs' listings
)

// newSkippedMetric registers weft_store_records_skipped_total on reg.
func newSkippedMetric(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "weft", Subsystem: "store", Name: "records_skipped_total",
		Help: "Stored records a reader left out because it cannot use them (they do not decode, or a route breaks a rule the proxies would refuse it for), each time it read one, by reader (xds, dns, api); each is logged as \"skipping undecodable record\" with its key. Cloud Map services and instances set aside while their namespace or service is missing are not counted (logged as \"setting aside record until its parent is back\").",
	}, []string{"reader"})
	for _, r := range []string{readerXDS, readerDNS, readerAPI} {
		c.WithLabelValues(r) // a series at 0 from the start
	}
	reg.MustRegister(c)
	return c
}

// skippedBy returns the skipped records' counter of reader, or nil.
func (c Config) skippedBy(reader string) prometheus.Counter {
	if c.skipped == nil {
		return nil
	}
	return c.skipped.WithLabelValues(reader)
}

// Run serves until ctx ends, then shuts down gracefully. It returns after
// every listener has stopped and the store is closed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := checkExposure(cfg, log); err != nil {
		return err
	}
	if !appmesh.IsAccountID(cfg.AccountID) {
		// Every resource's owner and ARN would hold it, and App Mesh's
		// and Cloud Map's models want 12 digits there.
		return fmt.Errorf("--account-id %q: want an AWS account id, 12 digits, e.g. 111122223333", cfg.AccountID)
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	authority, err := openCA(ctx, st, cfg, log.With("component", "ca"))
	if err != nil {
		return err
	}
	cfg.XDSClientCAs = authority.TrustPool
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = ca.DefaultTrustDomain
	}
	sec, err := newSecurity(ctx, st, cfg, log)
	if err != nil {
		return err
	}
	defer sec.stop()

	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen api: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c, ok := st.(prometheus.Collector); ok { // the etcd store's commit and learn latencies
		reg.MustRegister(c)
	}
	cfg.skipped = newSkippedMetric(reg)
	var dnsErr chan error // nil without a DNS server, or once it has reported
	if cfg.DNSAddr != "" {
		dnsSrv, err := dns.Listen(cfg.DNSAddr, dns.Config{Upstreams: cfg.DNSUpstreams, Limits: cfg.DNS, Registry: reg, Skipped: cfg.skippedBy(readerDNS)}, log.With("component", "dns"))
		if err != nil {
			ln.Close()
			return err
		}
		dctx, stopDNS := context.WithCancel(ctx)
		dnsErr = make(chan error, 1)
		go func() { dnsErr <- dnsSrv.Run(dctx, st) }() // ends with stopDNS, before the store closes
		defer func() {
			stopDNS()
			if dnsErr != nil {
				<-dnsErr
			}
		}()
	}
	tp, stopTracing, err := newTracing(ctx, cfg.OTLPEndpoint)
	if err != nil {
		ln.Close()
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), traceExportTimeout)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("flush traces", "err", err)
		}
	}()
	// With an OTLP endpoint, a write's trace follows it to every proxy
	// (pushtrace.go); without, the xDS server has no observer at all.
	var pushes *pushTracer
	if cfg.OTLPEndpoint != "" {
		pushes = newPushTracer(tp)
		cfg.xdsObserver = pushes
		// Deferred before xds.stop, so run after it: no stream pushes
		// once the open spans end; and before the flush.
		defer pushes.close()
	}
	xds, err := startXDS(ctx, st, cfg, sec, reg, log.With("component", "xds"))
	if err != nil {
		ln.Close()
		return err
	}
	defer xds.stop() // before the store closes
	fed, stopFed, err := startRemote(ctx, st, cfg, reg, log.With("component", "cloudmap-remote"))
	if err != nil {
		ln.Close()
		return err
	}
	defer stopFed() // before the store closes
	apiStore := tracedStore{Store: st, tr: tp.Tracer(tracerName), pushes: pushes}
	streamsStop := make(chan struct{})
	cfg.streamsStop = streamsStop
	srv := newAPIServer(traceWrites(tp, withRemoteStatus(newHandler(apiStore, cfg, log, reg, xds.proxies(), sec, authority, xds.load()), fed)), cfg.API)
	srv.RegisterOnShutdown(func() { close(streamsStop) }) // Shutdown waits for streams otherwise
	ln = newCapListener(ln, cfg.API, newAPIMetrics(reg))
	log.Info("api listening", "addr", ln.Addr().String(), "store", storeName(cfg))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }() // ends with Shutdown below
	select {
	case err := <-errc:
		return fmt.Errorf("serve api: %w", err)
	case err := <-dnsErr:
		dnsErr = nil
		srv.Close()
		return fmt.Errorf("dns: %w", err)
	case err := <-xds.failed():
		srv.Close()
		return fmt.Errorf("xds: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown api: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler builds the API listener's handler on a store. /metrics serves
// reg; /v1/proxies lists the proxies of xds, when one runs; /v1/tokens
// issues join tokens; /v1/ca shows the CA's roots and takes its rotation
// steps, when authority is not nil. With a credentials file (sec), every
// request but /healthz and /metrics is verified and authorized.
func newHandler(st store.Store, cfg Config, log *slog.Logger, reg *prometheus.Registry, xds *xdsserver.Server, sec *security, authority *ca.Authority, load *lrs.Server) http.Handler {
	other := http.NewServeMux()
	health := newStoreHealth(st)
	other.HandleFunc("GET /healthz", health.healthz)
	other.HandleFunc("GET /readyz", health.readyz)
	other.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if xds != nil {
		other.Handle("GET /v1/proxies", xds.ProxiesHandler())
	}
	if load != nil {
		other.Handle("GET /v1/traffic", trafficHandler(st, load, cfg.AccountID, log))
	}
	other.Handle("POST /v1/tokens", sec.tokensHandler(cfg))
	other.Handle("GET /v1/backup", backupHandler(st, log.With("component", "backup")))
	mesh := ops.New(st, ops.Config{Region: cfg.Region, Limits: cfg.Limits, Skipped: cfg.skippedBy(readerAPI)}, log)
	meshH := meshapi.New(mesh, meshapi.Config{DefaultAccount: cfg.AccountID, Region: cfg.Region}, log.With("api", "appmesh"))
	con := registerConsole(other, st, sec, xds, cfg.Region, meshH.CallerAccount, cfg.streamsStop, log.With("component", "console"))
	if authority != nil {
		authority.Register(other)
	}
	other.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteRESTError(w, http.StatusNotFound, "UnknownOperationException", "no operation at "+r.Method+" "+r.URL.Path)
	})
	cmLog := log.With("api", "cloudmap")
	registry := cloudmap.NewRegistry(st, cloudmap.Config{Region: cfg.Region, AccountID: cfg.AccountID, Limits: cfg.CloudMapLimits, Log: cmLog, Skipped: cfg.skippedBy(readerAPI)})
	h := &api.Handler{
		AppMesh:  meshH,
		CloudMap: cloudmapapi.New(registry, cmLog),
		STS:      stsapi.New(stsapi.Config{Region: cfg.Region, Account: meshH.CallerAccount}, log.With("api", "sts")),
		Other:    other,
		Guard:    sec.guard(cfg, meshH),
	}
	con.UseAPI(h) // the console's first page reads the API through the same chain, its Guard included
	return h
}

// openCA opens the mesh's CA in the store, importing cfg's CA files at
// first start.
func openCA(ctx context.Context, st store.Store, cfg Config, log *slog.Logger) (*ca.Authority, error) {
	var c ca.Config
	c.TrustDomain = cfg.TrustDomain
	if cfg.CACertFile != "" || cfg.CAKeyFile != "" {
		if cfg.CACertFile == "" || cfg.CAKeyFile == "" {
			return nil, errors.New("ca: give both --ca-cert and --ca-key")
		}
		var err error
		if c.ImportCert, err = os.ReadFile(cfg.CACertFile); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if c.ImportKey, err = os.ReadFile(cfg.CAKeyFile); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	return ca.Open(ctx, st, c, log)
}
