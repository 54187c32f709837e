// Package api is the HTTP front of the control plane: it sends each request
// to the App Mesh REST API, the Cloud Map JSON API, STS or weft's own endpoints,
// and writes errors the way AWS writes them.
package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/weftmesh/weft/internal/api/stsapi"
)

// Handler routes one listener's requests. Unset parts answer 404.
type Handler struct {
	// AppMesh serves the App Mesh REST API under /v20190125/.
	AppMesh http.Handler
	// CloudMap serves the Cloud Map JSON API: POST / with X-Amz-Target.
	CloudMap http.Handler
	// STS serves STS's query protocol (GetCallerIdentity): POST / with a
	// form-encoded body, or GET / with an Action.
	STS http.Handler
	// Other serves everything else (/healthz, /metrics, /v1/...).
	Other http.Handler
	// Guard, when set, verifies every request's SigV4 signature and
	// authorizes its action before it is served (a credentials file is
	// in force).
	Guard *Guard
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.Guard != nil {
		var ok bool
		if r, ok = h.Guard.check(w, r); !ok {
			return
		}
	}
	switch {
	case r.Header.Get("X-Amz-Target") != "" && h.CloudMap != nil:
		h.CloudMap.ServeHTTP(w, r)
	case h.STS != nil && stsapi.IsRequest(r):
		h.STS.ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/v20190125/") && h.AppMesh != nil:
		h.AppMesh.ServeHTTP(w, r)
	case h.Other != nil:
		h.Other.ServeHTTP(w, r)
	default:
		WriteRESTError(w, http.StatusNotFound, "UnknownOperationException", "no operation at "+r.Method+" "+r.URL.Path)
	}
}

// WriteRESTError writes an error as rest-json AWS services do: the type in
// the x-amzn-ErrorType header and a JSON body with the message.
func WriteRESTError(w http.ResponseWriter, status int, errType, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-amzn-ErrorType", errType)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Message string `json:"message"`
	}{message})
}
