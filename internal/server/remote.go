package server

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/discovery/remote"
	"github.com/weftmesh/weft/internal/store"
)

// startRemote starts following the remote Cloud Maps of cfg.CloudMapRemote
// into the store (internal/discovery/remote). Without remotes it only
// drops the records a previous configuration left. stop waits for it.
func startRemote(ctx context.Context, st store.Store, cfg Config, reg prometheus.Registerer, log *slog.Logger) (f *remote.Follower, stop func(), err error) {
	f, err = remote.New(ctx, cfg.CloudMapRemote, reg, log)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range cfg.CloudMapRemote.Remotes {
		log.Info("resolving Cloud Map namespaces remotely", "remote", r.Name, "endpoint", r.Endpoint, "region", r.Region, "namespaces", r.Namespaces)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // ends with stop (or at once without remotes), before the store closes
		defer close(done)
		f.Run(rctx, st)
	}()
	return f, func() { cancel(); <-done }, nil
}

// withRemoteStatus adds GET /v1/discovery (action weft:GetDiscovery) to
// the API handler h: the followed services' status.
func withRemoteStatus(h http.Handler, f *remote.Follower) http.Handler {
	ah, ok := h.(*api.Handler)
	if !ok || f == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/discovery", f.Handler())
	if ah.Other != nil {
		mux.Handle("/", ah.Other)
	}
	c := *ah
	c.Other = mux
	return &c
}
