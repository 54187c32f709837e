package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/lrs"
)

// trafficResponse is GET /v1/traffic's body.
type trafficResponse struct {
	Mesh          string     `json:"mesh"`
	WindowSeconds float64    `json:"windowSeconds"`
	GeneratedAt   time.Time  `json:"generatedAt"`
	Edges         []lrs.Edge `json:"edges"`
}

// trafficHandler serves GET /v1/traffic?mesh=M[&meshOwner=A]: the mesh's
// edges over the LRS window. The mesh's owner is meshOwner, else the
// caller's account, else the server's default account.
func trafficHandler(st store.Store, load *lrs.Server, defaultOwner string, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mesh := q.Get("mesh")
		if mesh == "" {
			api.WriteRESTError(w, http.StatusBadRequest, "BadRequestException", "mesh: the query parameter is required (GET /v1/traffic?mesh=<mesh name>)")
			return
		}
		owner, caller := q.Get("meshOwner"), api.Account(r.Context())
		if caller != "" && owner != "" && owner != caller {
			// Authorized on "*" of weft:GetTraffic, which does not name
			// another account's meshes: refused, whether the mesh
			// exists or not.
			api.WriteRESTError(w, http.StatusForbidden, "AccessDeniedException", "meshOwner "+owner+" is not the caller's account: /v1/traffic shows the caller's own meshes")
			return
		}
		if owner == "" {
			owner = caller
		}
		if owner == "" {
			owner = defaultOwner
		}
		sv, found, err := lrs.LoadServices(r.Context(), st, owner, mesh)
		if err != nil {
			log.Error("traffic: read mesh", "mesh", mesh, "err", err)
			api.WriteRESTError(w, http.StatusInternalServerError, "InternalServerErrorException", "the mesh could not be read")
			return
		}
		if !found {
			api.WriteRESTError(w, http.StatusNotFound, "NotFoundException", "mesh "+mesh+" of account "+owner+" does not exist")
			return
		}
		edges := load.Traffic(owner, mesh)
		for i := range edges {
			edges[i].VirtualService = sv.VirtualService(edges[i].Source, edges[i].Target.Name)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(trafficResponse{Mesh: mesh, WindowSeconds: load.Window().Seconds(),
			GeneratedAt: time.Now().UTC().Truncate(time.Second), Edges: edges})
	})
}
