package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/dump"
	"github.com/weftmesh/weft/internal/store/storeurl"
)

// storeRetryMax bounds the wait between attempts to reach an etcd store
// at start.
const storeRetryMax = 10 * time.Second

func storeName(cfg Config) string {
	if cfg.Store != "" {
		if t, err := storeurl.Parse(cfg.Store); err == nil {
			return t.String()
		}
		return cfg.Store
	}
	return "bolt://" + filepath.Join(cfg.DataDir, "weft.db")
}

// openStore opens the configured store: the embedded one in DataDir, or
// the one named by cfg.Store. An etcd cluster that cannot be reached is
// retried, with the reason logged, until ctx ends; a store this weft must
// not use (written by a newer weft) fails at once.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (store.Store, error) {
	if cfg.Store == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		return openBolt(filepath.Join(cfg.DataDir, "weft.db"), log)
	}
	t, err := storeurl.Parse(cfg.Store)
	if err != nil {
		return nil, err
	}
	if t.Kind == "bolt" {
		return openBolt(t.Path, log)
	}
	wait := 500 * time.Millisecond
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := storeurl.Open(octx, t, cfg.Etcd, log.With("component", "store"))
		cancel()
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
			return nil, fmt.Errorf("open store %s: %w", t, err)
		}
		log.Warn("store unreachable, retrying", "store", t.String(), "retry_in", wait.String(), "err", err)
		tm := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil, fmt.Errorf("open store %s: %w", t, err)
		case <-tm.C:
		}
		wait = min(2*wait, storeRetryMax)
	}
}

func openBolt(path string, log *slog.Logger) (store.Store, error) {
	t := storeurl.Target{Kind: "bolt", Path: path}
	st, err := storeurl.Open(context.Background(), t, storeurl.Etcd{}, log)
	if err != nil {
		return nil, err
	}
	// The store holds the CA's private keys: owner only.
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("store file was readable by others; making it owner-only, as it holds the CA's keys", "path", path, "mode", fi.Mode().Perm().String())
		if err := os.Chmod(path, 0o600); err != nil {
			st.Close()
			return nil, fmt.Errorf("restrict store file: %w", err)
		}
	}
	return st, nil
}

// storeHealthTTL is how long one check of the store's connection answers
// /healthz and /readyz, so that frequent probes cost one etcd read.
const storeHealthTTL = time.Second

// storeHealth answers /healthz (the process serves; the store's state is
// in the body) and /readyz (503 while the store cannot be reached, so that
// a load balancer sends API calls to another replica).
type storeHealth struct {
	st store.Store

	mu      sync.Mutex // protects the fields below
	checked time.Time
	err     error
}

func newStoreHealth(st store.Store) *storeHealth {
	return &storeHealth{st: st}
}

func (h *storeHealth) check(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.checked) < storeHealthTTL {
		return h.err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	h.err = h.st.Ping(cctx)
	h.checked = time.Now()
	return h.err
}

func (h *storeHealth) healthz(w http.ResponseWriter, r *http.Request) {
	if err := h.check(r.Context()); err != nil {
		fmt.Fprintf(w, "ok\nstore: unreachable: %v\n", err)
		return
	}
	w.Write([]byte("ok\n"))
}

func (h *storeHealth) readyz(w http.ResponseWriter, r *http.Request) {
	if err := h.check(r.Context()); err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: store unreachable: %v\n", err)
		return
	}
	w.Write([]byte("ready\n"))
}

// countingWriter notes whether anything was written, so that an error
// before the first byte can still get a status.
type countingWriter struct {
	w       http.ResponseWriter
	started bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if !c.started {
		c.started = true
		c.w.Header().Set("Content-Type", "application/x-ndjson")
		c.w.WriteHeader(http.StatusOK)
	}
	// The dump is written from inside a store read transaction: a client
	// that stops reading must not hold it (bbolt's writers can wait on an
	// open read transaction), so each write has its own deadline.
	_ = http.NewResponseController(c.w).SetWriteDeadline(time.Now().Add(backupWriteTimeout))
	return c.w.Write(p)
}

// backupWriteTimeout bounds each write of a backup to its client.
const backupWriteTimeout = 30 * time.Second

// backupHandler serves GET /v1/backup (action weft:GetBackup): a
// consistent snapshot of the whole store as a dump file, CA keys
// included. An error after the first byte cuts the stream, which the
// dump's missing trailer makes a restore refuse.
func backupHandler(st store.Store, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{w: w}
		n, rev, err := dump.Write(r.Context(), st, cw)
		if err != nil {
			log.Warn("backup failed", "err", err, "started", cw.started)
			if !cw.started {
				status, code := http.StatusInternalServerError, "InternalFailure"
				if errors.Is(err, store.ErrUnavailable) {
					status, code = http.StatusServiceUnavailable, "ServiceUnavailableException"
				}
				api.WriteRESTError(w, status, code, "backup: "+err.Error())
			}
			return
		}
		log.Info("backup served", "keys", n, "revision", rev)
	}
}
