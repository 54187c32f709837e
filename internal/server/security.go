package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/auth"
	"github.com/weftmesh/weft/internal/console"
	"github.com/weftmesh/weft/internal/store"
)

// SigningNames are the SigV4 service names the API accepts: App Mesh's,
// Cloud Map's, STS's (GetCallerIdentity, which IAM allows every caller)
// and weft's own for /v1/.
var signingNames = []string{"appmesh", "servicediscovery", "sts", "weft"}

// security is what the credentials file and the token key make of a
// Config: who may call the API, and how xDS streams prove who they are.
type security struct {
	keys *auth.KeyFile // nil without --auth-file
	// sessions are the web console's sign-ins, nil without --auth-file.
	sessions *console.Sessions
	tokens   *auth.Tokens
	xds      *auth.XDS
	// stop ends the credentials file's watch and waits for it.
	stop func()
}

// checkExposure refuses to serve the API or xDS on an address other
// machines can reach without credentials, unless told --insecure.
func checkExposure(cfg Config, log *slog.Logger) error {
	if cfg.AuthFile != "" {
		return nil
	}
	for _, l := range []struct{ flag, addr string }{{"--api-addr", cfg.APIAddr}, {"--xds-addr", cfg.XDSAddr}} {
		if l.addr == "" || loopbackAddr(l.addr) {
			continue
		}
		if !cfg.Insecure {
			return fmt.Errorf("%s %s is reachable from other machines: give --auth-file (access keys for the API and xDS), or --insecure to serve it to anyone", l.flag, l.addr)
		}
		log.Warn("serving without credentials on a non-loopback address: anyone who reaches it can read and change everything (--insecure)", "flag", l.flag, "addr", l.addr)
	}
	return nil
}

// loopbackAddr reports whether a listen address is on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newSecurity loads the credentials file (and keeps reloading it until
// ctx ends or stop is called) and the join-token key.
func newSecurity(ctx context.Context, st store.Store, cfg Config, log *slog.Logger) (*security, error) {
	key, err := auth.LoadTokenKey(ctx, st)
	if err != nil {
		return nil, err
	}
	s := &security{tokens: auth.NewTokens(key), stop: func() {}}
	s.xds = &auth.XDS{Tokens: s.tokens, ClientCAs: cfg.XDSClientCAs, TrustDomain: cfg.TrustDomain, Region: cfg.Region}
	if cfg.AuthFile != "" {
		if s.keys, err = auth.LoadKeyFile(cfg.AuthFile, log.With("component", "auth")); err != nil {
			return nil, err
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // ends with cancel, in stop, or with ctx
			defer close(done)
			s.keys.Watch(wctx, 0)
		}()
		s.stop = func() { cancel(); <-done }
		s.xds.Verifier = &auth.Verifier{Keys: s.keys, Services: []string{"appmesh", "appmesh-preview"}}
		s.xds.Required = true
		s.sessions = console.NewSessions(s.keys, console.SessionLimits{}, nil)
	}
	log.Info("access control", "auth_file", cfg.AuthFile, "xds", s.xds.String())
	return s, nil
}

// guard is the API's Guard with a credentials file, nil without one.
func (s *security) guard(cfg Config, mesh *meshapi.Handler) *api.Guard {
	if s == nil || s.keys == nil {
		return nil
	}
	v := &auth.Verifier{Keys: s.keys, Services: signingNames}
	return &api.Guard{
		Verify:  v.VerifyHTTP,
		AppMesh: mesh.Action,
		CloudMap: func(target string, body []byte) (string, string) {
			return cloudmapapi.Action(cfg.Region, cfg.AccountID, target, body)
		},
		Weft:         api.WeftAction(nil, api.TokenResource(cfg.Region)),
		MaxBodyBytes: 1 << 20,
		Session:      s.sessions.Authenticate,
	}
}

// tokensHandler serves POST /v1/tokens.
func (s *security) tokensHandler(cfg Config) http.Handler {
	return api.TokensHandler(s.tokens, cfg.Region, cfg.AccountID, time.Now)
}

// xdsTLS adds client certificate verification to the xDS listener's TLS
// when weft's CA is known: a certificate is asked for, not required, and
// verified against the CA's pool of the moment (it follows rotation).
func (s *security) xdsTLS(base *tls.Config) *tls.Config {
	if s == nil || s.xds.ClientCAs == nil {
		return base
	}
	pool := s.xds.ClientCAs
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pool()
		if c.ClientCAs != nil {
			c.ClientAuth = tls.VerifyClientCertIfGiven
		}
		return c, nil
	}
	return base
}
