package server

import (
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/weftmesh/weft/internal/console"
	"github.com/weftmesh/weft/internal/store"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// registerConsole serves the web console at /console/ and its live
// events at GET /v1/events (action weft:GetEvents) on mux. account names a
// request's mesh owner as the App Mesh API does.
// Closing stop ends the event streams (nil: they end with their requests).
func registerConsole(mux *http.ServeMux, st store.Store, sec *security, xds *xdsserver.Server, account func(*http.Request) string, stop <-chan struct{}, log *slog.Logger) {
	var sessions *console.Sessions
	if sec != nil {
		sessions = sec.sessions
	}
	mux.Handle("/console/", console.New(sessions))
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	var digest func() string
	if xds != nil {
		digest = func() string {
			b, _ := json.Marshal(xds.Proxies())
			sum := sha256.Sum256(b)
			return string(sum[:])
		}
	}
	mux.Handle("GET /v1/events", console.NewEvents(console.EventsConfig{Store: st, Account: account, ProxiesDigest: digest, Stop: stop, Log: log}))
}
