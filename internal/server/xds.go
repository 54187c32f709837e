package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/lrs"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// xdsRun is a running xDS server.
type xdsRun struct {
	srv    *xdsserver.Server
	lrs    *lrs.Server   // load reports, served on the same listener
	errc   chan error    // Serve's result, buffered; see failed
	done   chan struct{} // closed when Serve has returned
	cancel context.CancelFunc
}

// startXDS listens on cfg.XDSAddr (with TLS when a certificate is given)
// and serves ADS from st until stop is called or ctx ends; sec (nil: none)
// authorizes each stream. It returns nil
// when cfg.XDSAddr is empty.
func startXDS(ctx context.Context, st store.Store, cfg Config, sec *security, reg prometheus.Registerer, log *slog.Logger) (*xdsRun, error) {
	if cfg.XDSAddr == "" {
		return nil, nil
	}
	handshake := cfg.XDSHandshakeTimeout
	if handshake <= 0 {
		handshake = DefaultXDSHandshakeTimeout
	}
	opts := []grpc.ServerOption{grpc.ConnectionTimeout(handshake)}
	switch {
	case cfg.XDSTLSCert != "" && cfg.XDSTLSKey != "":
		cert, err := tls.LoadX509KeyPair(cfg.XDSTLSCert, cfg.XDSTLSKey)
		if err != nil {
			return nil, fmt.Errorf("xds tls: %w", err)
		}
		tc := sec.xdsTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	case cfg.XDSTLSCert != "" || cfg.XDSTLSKey != "":
		return nil, errors.New("xds tls: give both a certificate and a key")
	}
	plain, err := net.Listen("tcp", cfg.XDSAddr)
	if err != nil {
		return nil, fmt.Errorf("listen xds: %w", err)
	}
	ln := newXDSCapListener(plain, cfg.XDSMaxConns, newXDSMetrics(reg))
	var authorize func(context.Context, translate.Identity) (bool, error)
	if sec != nil {
		authorize = sec.xds.Authorize
	}
	// Certificates and keys go only to streams that proved their
	// identity, unless nothing but this host can reach the listener, or
	// the operator said so.
	insecure := isLoopback(ln.Addr())
	if !insecure && cfg.XDSInsecure {
		insecure = true
		log.Warn("--xds-insecure: any client that reaches the xDS listener is sent the certificate and key of the virtual node or gateway it names", "addr", ln.Addr().String())
	}
	// LRS shares the listener, its credentials and its authorization: a
	// proxy reports for the node id it proved, as it streams ADS for it.
	// The xDS server builds its gRPC server itself, so LRS is served as
	// the service that server does not know.
	load := lrs.New(lrs.Options{
		ParseNodeID: func(id string) (translate.Identity, error) { return xdsserver.ParseNodeID(id, cfg.AccountID) },
		Authorize:   authorize,
		Limits:      cfg.LRS,
		Log:         log.With("component", "lrs"),
	})
	if reg != nil {
		reg.MustRegister(load.Collector())
	}
	opts = append(opts, load.UnknownServiceHandler())
	srv := xdsserver.New(xdsserver.Options{
		Authorize:     authorize,
		Store:         st,
		LoadDiscovery: xdsserver.CloudMap,
		Translate:     translate.TranslateWithTracing(cfg.ProxyTracing),
		CheckResource: translate.CheckResource,
		CheckRefs:     translate.CheckRefs,
		DefaultOwner:  cfg.AccountID,
		Log:           log,
		Registry:      reg,
		Skipped:       cfg.skippedBy(readerXDS),
		GRPCOptions:   opts,
		Limits:        cfg.XDS,

		TrustDomain:     cfg.TrustDomain,
		CertLifetime:    cfg.CertLifetime,
		InsecureSecrets: insecure,
		Observer:        cfg.xdsObserver,

		// Route tables made of shared virtual hosts: each host checked
		// once per batch, with CheckResource's result.
		CheckAssembled: (*translate.HostChecks).CheckAssembled,
	})
	ctx, cancel := context.WithCancel(ctx)
	x := &xdsRun{srv: srv, lrs: load, errc: make(chan error, 1), done: make(chan struct{}), cancel: cancel}
	go func() { // ends with cancel, in stop
		defer close(x.done)
		if err := srv.Serve(ctx, ln); err != nil {
			x.errc <- err
		}
	}()
	return x, nil
}

// failed delivers Serve's error if it fails before stop; nil (blocks
// forever in a select) when no server runs.
func (x *xdsRun) failed() <-chan error {
	if x == nil {
		return nil
	}
	return x.errc
}

// stop ends the server and waits until it has.
func (x *xdsRun) stop() {
	if x == nil {
		return
	}
	x.cancel()
	<-x.done
}

// proxies is the server, or nil when none runs.
func (x *xdsRun) proxies() *xdsserver.Server {
	if x == nil {
		return nil
	}
	return x.srv
}

// load is the LRS server, or nil when no xDS server runs.
func (x *xdsRun) load() *lrs.Server {
	if x == nil {
		return nil
	}
	return x.lrs
}
