// Package server assembles the control plane: it opens the store and runs
// the API listener (App Mesh, Cloud Map, health and status endpoints), the
// DNS server and the xDS server until its context ends.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// Config is what `weft server` is told by its flags.
type Config struct {
	APIAddr   string // host:port of the API listener
	DataDir   string // directory holding the embedded store
	Region    string // region written into ARNs
	AccountID string // account that owns resources by default
	// Limits are the App Mesh quotas; the zero value means App Mesh's
	// defaults.
	Limits appmesh.Limits
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
}

// Run serves until ctx ends, then shuts down gracefully. It returns after
// every listener has stopped and the store is closed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	st, err := bolt.Open(filepath.Join(cfg.DataDir, "weft.db"), bolt.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen api: %w", err)
	}
	var dnsErr chan error // nil without a DNS server, or once it has reported
	if cfg.DNSAddr != "" {
		dnsSrv, err := dns.Listen(cfg.DNSAddr, dns.Config{Upstreams: cfg.DNSUpstreams}, log.With("component", "dns"))
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	xds, err := startXDS(ctx, st, cfg, reg, log.With("component", "xds"))
	if err != nil {
		ln.Close()
		return err
	}
	defer xds.stop() // before the store closes
	srv := &http.Server{
		Handler:           NewHandler(st, cfg, log, reg, xds.proxies()),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("api listening", "addr", ln.Addr().String(), "data_dir", cfg.DataDir)

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

// NewHandler builds the API listener's handler on a store. /metrics serves
// reg; /v1/proxies lists the proxies of xds, when one runs.
func NewHandler(st store.Store, cfg Config, log *slog.Logger, reg *prometheus.Registry, xds *xdsserver.Server) http.Handler {
	other := http.NewServeMux()
	other.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	other.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if xds != nil {
		other.Handle("GET /v1/proxies", xds.ProxiesHandler())
	}
	other.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteRESTError(w, http.StatusNotFound, "UnknownOperationException", "no operation at "+r.Method+" "+r.URL.Path)
	})
	mesh := ops.New(st, ops.Config{Region: cfg.Region, Limits: cfg.Limits}, log)
	registry := cloudmap.NewRegistry(st, cloudmap.Config{Region: cfg.Region, AccountID: cfg.AccountID})
	meshAPI := meshapi.New(mesh, meshapi.Config{DefaultAccount: cfg.AccountID}, log.With("api", "appmesh"))
	return &api.Handler{
		AppMesh:  meshAPI,
		CloudMap: cloudmapapi.New(registry, log.With("api", "cloudmap")),
		STS:      stsapi.New(stsapi.Config{Region: cfg.Region, Account: meshAPI.CallerAccount}, log.With("api", "sts")),
		Other:    other,
	}
}
