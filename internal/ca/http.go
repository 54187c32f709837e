package ca

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/weftmesh/weft/internal/api"
)

// Status is GET /v1/ca: the roots, never a key.
type Status struct {
	TrustDomain string       `json:"trustDomain"`
	Roots       []RootStatus `json:"roots"`
}

// RootStatus is one root of Status.
type RootStatus struct {
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the signing certificate
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	Signing     bool      `json:"signing"`
	Imported    bool      `json:"imported"`
	Added       time.Time `json:"added"`
	// Anchor is the fingerprint of the certificate peers trust for it
	// (itself, or the root above an imported intermediate).
	Anchor string `json:"anchor"`
}

// StatusOf describes a state.
func StatusOf(trustDomain string, s *State) Status {
	out := Status{TrustDomain: trustDomain, Roots: []RootStatus{}}
	for i, r := range s.Roots {
		out.Roots = append(out.Roots, rootStatus(r, i == s.Signer))
	}
	return out
}

func rootStatus(r *Root, signing bool) RootStatus {
	return RootStatus{
		Fingerprint: r.Fingerprint(), Subject: r.Cert.Subject.String(), Issuer: r.Cert.Issuer.String(),
		NotBefore: r.Cert.NotBefore, NotAfter: r.Cert.NotAfter, Signing: signing, Imported: r.Imported,
		Added: r.Added, Anchor: Fingerprint(r.Anchor()),
	}
}

// maxBody bounds a POST /v1/ca/roots body (a PEM chain and key).
const maxBody = 1 << 20

// AddRootRequest is the body of POST /v1/ca/roots; both empty (or no
// body) generates a root.
type AddRootRequest struct {
	Certificate string `json:"certificate,omitempty"` // PEM, signing certificate first
	PrivateKey  string `json:"privateKey,omitempty"`  // PEM
}

// Register adds the CA's endpoints to mux:
//
//	GET    /v1/ca                        Status
//	POST   /v1/ca/roots                  introduce a root (AddRootRequest) → RootStatus
//	POST   /v1/ca/roots/{fp}/activate    make it sign → RootStatus
//	DELETE /v1/ca/roots/{fp}             stop trusting it → RootStatus
//
// {fp} is a fingerprint or a unique prefix of at least 8 hex digits.
func (a *Authority) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, StatusOf(a.trustDomain, a.State()))
	})
	mux.HandleFunc("POST /v1/ca/roots", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			api.WriteRESTError(w, http.StatusBadRequest, "BadRequestException", "read body: "+err.Error())
			return
		}
		if len(body) > maxBody {
			api.WriteRESTError(w, http.StatusRequestEntityTooLarge, "BadRequestException", "body larger than 1 MiB")
			return
		}
		var req AddRootRequest
		if len(body) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				api.WriteRESTError(w, http.StatusBadRequest, "BadRequestException", "body: "+err.Error())
				return
			}
		}
		root, err := a.AddRoot(r.Context(), []byte(req.Certificate), []byte(req.PrivateKey))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, rootStatus(root, false))
	})
	mux.HandleFunc("POST /v1/ca/roots/{fp}/activate", func(w http.ResponseWriter, r *http.Request) {
		root, err := a.Activate(r.Context(), r.PathValue("fp"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rootStatus(root, true))
	})
	mux.HandleFunc("DELETE /v1/ca/roots/{fp}", func(w http.ResponseWriter, r *http.Request) {
		root, err := a.RemoveRoot(r.Context(), r.PathValue("fp"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rootStatus(root, false))
	})
}

func writeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		api.WriteRESTError(w, http.StatusNotFound, "NotFoundException", err.Error())
	case errors.Is(err, ErrConflict):
		api.WriteRESTError(w, http.StatusConflict, "ConflictException", err.Error())
	case errors.Is(err, ErrInvalid):
		api.WriteRESTError(w, http.StatusBadRequest, "BadRequestException", err.Error())
	default:
		api.WriteRESTError(w, http.StatusInternalServerError, "InternalServerErrorException", err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
