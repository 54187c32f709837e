// Package storeurl opens a store named by a URL, as `weft server --store`,
// `weft backup`, `weft restore` and `weft store copy` take it:
//
//	bolt:///path/to/weft.db, or a plain file path   the embedded store
//	etcd://host:2379,host:2379[/prefix]             an etcd cluster
package storeurl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/store/etcd"
)

// Etcd holds the options of an etcd store that do not fit in its URL.
type Etcd struct {
	// CACert (PEM) verifies etcd's certificates and makes the connections
	// TLS; Cert and Key (PEM) are the client certificate etcd may ask for.
	CACert, Cert, Key string
	// Username and Password when etcd has authentication on.
	Username, Password string
}

// Target is a parsed store URL.
type Target struct {
	Kind      string // "bolt" or "etcd"
	Path      string // bolt: the file
	Endpoints []string
	Prefix    string // etcd: key prefix ("" for etcd.DefaultPrefix)
}

func (t Target) String() string {
	if t.Kind == "bolt" {
		return "bolt://" + t.Path
	}
	s := "etcd://" + strings.Join(t.Endpoints, ",")
	if t.Prefix != "" {
		s += t.Prefix
	}
	return s
}

// Parse reads a store URL.
func Parse(raw string) (Target, error) {
	switch {
	case strings.HasPrefix(raw, "etcd://"):
		rest := strings.TrimPrefix(raw, "etcd://")
		hosts, prefix, _ := strings.Cut(rest, "/")
		t := Target{Kind: "etcd"}
		if prefix != "" {
			t.Prefix = "/" + strings.TrimSuffix(prefix, "/")
		}
		for _, h := range strings.Split(hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				if !strings.Contains(h, ":") {
					h += ":2379"
				}
				t.Endpoints = append(t.Endpoints, h)
			}
		}
		if len(t.Endpoints) == 0 {
			return Target{}, fmt.Errorf("store %q: no etcd host, want etcd://host:2379,host:2379", raw)
		}
		return t, nil
	case strings.HasPrefix(raw, "bolt://"):
		p := strings.TrimPrefix(raw, "bolt://")
		if p == "" {
			return Target{}, fmt.Errorf("store %q: no file, want bolt:///path/to/weft.db", raw)
		}
		return Target{Kind: "bolt", Path: p}, nil
	case strings.Contains(raw, "://"):
		return Target{}, fmt.Errorf("store %q: unknown kind, want etcd://host:port,... or bolt:///path/weft.db", raw)
	case raw == "":
		return Target{}, errors.New("store: empty URL")
	default:
		return Target{Kind: "bolt", Path: raw}, nil
	}
}

// Open opens the target. An etcd store must answer within ctx.
func Open(ctx context.Context, t Target, e Etcd, log *slog.Logger) (store.Store, error) {
	switch t.Kind {
	case "bolt":
		if err := os.MkdirAll(filepath.Dir(t.Path), 0o700); err != nil {
			return nil, fmt.Errorf("create store directory: %w", err)
		}
		return bolt.Open(t.Path, bolt.Options{})
	case "etcd":
		opts := etcd.Options{Prefix: t.Prefix, Username: e.Username, Password: e.Password, Log: log}
		tlsCfg, err := e.tls()
		if err != nil {
			return nil, err
		}
		opts.TLS = tlsCfg
		for _, h := range t.Endpoints {
			scheme := "http://"
			if tlsCfg != nil {
				scheme = "https://"
			}
			opts.Endpoints = append(opts.Endpoints, scheme+h)
		}
		return etcd.Open(ctx, opts)
	}
	return nil, fmt.Errorf("store kind %q", t.Kind)
}

func (e Etcd) tls() (*tls.Config, error) {
	if e.CACert == "" && e.Cert == "" && e.Key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CACert != "" {
		pem, err := os.ReadFile(e.CACert)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate", e.CACert)
		}
		cfg.RootCAs = pool
	}
	if (e.Cert == "") != (e.Key == "") {
		return nil, errors.New("etcd client certificate: give both the certificate and its key")
	}
	if e.Cert != "" {
		pair, err := tls.LoadX509KeyPair(e.Cert, e.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
