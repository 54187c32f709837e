package api

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/weftmesh/weft/internal/auth"
)

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	// Resource is the virtual node or gateway: its ARN or
	// mesh/<mesh>[@<owner>]/virtualNode/<name>.
	Resource string `json:"resource"`
	// TTL is how long the token is valid, as Go writes durations
	// ("24h"); default 24h, at most 366 days.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse is the answer of POST /v1/tokens.
type TokenResponse struct {
	Token     string    `json:"token"`
	Resource  string    `json:"resource"` // the ARN the token is bound to
	ExpiresAt time.Time `json:"expiresAt"`
}

// TokenResource names the resource of a token request, for the Guard:
// weft:CreateToken is authorized on the node's ARN.
func TokenResource(region string) func(r *http.Request, body []byte, account string) string {
	return func(r *http.Request, body []byte, account string) string {
		if r.URL.Path != "/v1/tokens" {
			return ""
		}
		var req TokenRequest
		if json.Unmarshal(body, &req) != nil {
			return ""
		}
		arn, err := auth.ParseResource(req.Resource, region, account)
		if err != nil {
			return ""
		}
		return arn
	}
}

// TokensHandler serves POST /v1/tokens: a join token bound to one virtual
// node or gateway, for its proxies' xDS streams. The mesh owner defaults
// to the caller's account (the server's without a credentials file).
func TokensHandler(tokens *auth.Tokens, region, defaultAccount string, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			WriteRESTError(w, http.StatusBadRequest, "BadRequestException", "The request body could not be read")
			return
		}
		var req TokenRequest
		if err := json.Unmarshal(body, &req); err != nil {
			WriteRESTError(w, http.StatusBadRequest, "BadRequestException", "The request body must be {\"resource\": ..., \"ttl\": ...}: "+err.Error())
			return
		}
		account := Account(r.Context())
		if account == "" {
			account = defaultAccount
		}
		arn, err := auth.ParseResource(req.Resource, region, account)
		if err != nil {
			WriteRESTError(w, http.StatusBadRequest, "BadRequestException", err.Error())
			return
		}
		ttl := auth.DefaultTokenTTL
		if req.TTL != "" {
			if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 || ttl > auth.MaxTokenTTL {
				WriteRESTError(w, http.StatusBadRequest, "BadRequestException", "ttl must be a positive duration of at most 8784h, e.g. 24h")
				return
			}
		}
		t := now()
		exp := t.Add(ttl).Truncate(time.Second)
		tok, err := tokens.Mint(arn, t, exp)
		if err != nil {
			WriteRESTError(w, http.StatusInternalServerError, "InternalFailure", "internal error")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(TokenResponse{Token: tok, Resource: arn, ExpiresAt: exp.UTC()})
	})
}
