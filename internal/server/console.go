package server

import (
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/console"
	"github.com/weftmesh/weft/internal/store"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// registerConsole serves the web console at /console/ and its live
// events at GET /v1/events (action weft:GetEvents) on mux. account names a
// request's mesh owner as the App Mesh API does.
// Closing stop ends the event streams (nil: they end with their requests).
// The caller hands the returned console the API's handler chain
// (UseAPI), which its first page is read through.
func registerConsole(mux *http.ServeMux, st store.Store, sec *security, xds *xdsserver.Server, region string, account func(*http.Request) string, stop <-chan struct{}, log *slog.Logger) *console.Handler {
	var sessions *console.Sessions
	if sec != nil {
		sessions = sec.sessions
	}
	con := console.New(sessions)
	mux.Handle("/console/", con)
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	var digest func() string
	if xds != nil {
		digest = func() string {
			b, _ := json.Marshal(xds.Proxies())
			sum := sha256.Sum256(b)
			return string(sum[:])
		}
	}
	// A snapshot holds, and change events name, only what the caller may
	// Describe (with a credentials file).
	allowed := func(r *http.Request) func(appmesh.Ref) bool {
		key := api.Caller(r.Context())
		if key == nil {
			return nil
		}
		return func(ref appmesh.Ref) bool {
			return key.Allowed(console.DescribeAction(ref.Kind), appmesh.ARN(region, ref))
		}
	}
	var credsChanged func() <-chan struct{}
	if sec != nil && sec.keys != nil {
		credsChanged = sec.keys.Changed
	}
	mux.Handle("GET /v1/events", console.NewEvents(console.EventsConfig{Store: st, Account: account, ProxiesDigest: digest,
		Allowed: allowed, CredentialsChanged: credsChanged, Stop: stop, Log: log}))
	return con
}
