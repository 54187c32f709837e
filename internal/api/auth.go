package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/weftmesh/weft/internal/api/stsapi"
	"github.com/weftmesh/weft/internal/auth"
)

// Guard makes every request prove who sent it (SigV4) and checks that the
// caller may perform the request's action on its resource, before the
// request reaches its API. /healthz, /readyz and /metrics stay open.
type Guard struct {
	// Verify checks a request's signature over its body.
	Verify func(r *http.Request, body []byte) (*auth.Key, error)
	// AppMesh names an App Mesh request's action and resource ARN for a
	// caller of account (meshapi.Handler.Action); ok is false when no
	// operation matches, and the API answers the error.
	AppMesh func(r *http.Request, body []byte, account string) (action, resource string, ok bool)
	// CloudMap names a Cloud Map request's action and resource ARN
	// (cloudmapapi.Action).
	CloudMap func(target string, body []byte) (action, resource string)
	// Weft names the action and resource of an endpoint under /v1/ for a
	// caller of account (see WeftAction).
	Weft func(r *http.Request, body []byte, account string) (action, resource string)
	// MaxBodyBytes bounds the body read to hash it (the APIs' own bound).
	MaxBodyBytes int64
	// Session, when set, names the key of a web console session
	// (console.Sessions.Authenticate): a request without an Authorization
	// header that carries the session's cookie and CSRF token acts as that
	// key, authorized like a request it signed. present is false when the
	// request carries no session; err is an *auth.Error.
	Session func(r *http.Request) (key *auth.Key, err error, present bool)
}

type accountKey struct{}

// WithAccount returns ctx carrying the verified caller's account.
func WithAccount(ctx context.Context, account string) context.Context {
	return context.WithValue(ctx, accountKey{}, account)
}

// Account returns the verified caller's account, or "" when the request
// was not verified (no credentials file).
func Account(ctx context.Context) string {
	s, _ := ctx.Value(accountKey{}).(string)
	return s
}

type callerKey struct{}

// Caller returns the verified caller's key, or nil when the request was
// not verified (no credentials file). A handler that reads several
// resources for one request authorizes each with it (Key.Allowed).
func Caller(ctx context.Context) *auth.Key {
	k, _ := ctx.Value(callerKey{}).(*auth.Key)
	return k
}

// check authenticates and authorizes r. On success it returns the request
// to serve (its body replayable, its context carrying the account); on
// failure it has written the AWS-shaped error.
func (g *Guard) check(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	target := r.Header.Get("X-Amz-Target")
	isSTS := target == "" && stsapi.IsRequest(r)
	fail := func(e *auth.Error) (*http.Request, bool) {
		switch {
		case target != "":
			WriteJSONError(w, e.Status, e.Code, e.Message)
		case isSTS:
			stsapi.WriteError(w, e.Status, e.Code, e.Message)
		default:
			WriteRESTError(w, e.Status, e.Code, e.Message)
		}
		return nil, false
	}
	// Open paths, but only as Other serves them: a request with a target
	// goes to Cloud Map whatever its path.
	if target == "" && (r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics" || r.URL.Path == "/console" || strings.HasPrefix(r.URL.Path, "/console/")) {
		return r, true // the console's assets and sign-in; its API calls come back through here
	}
	limit := g.MaxBodyBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	var body []byte
	if r.Body != nil {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return fail(&auth.Error{Status: http.StatusRequestEntityTooLarge, Code: "RequestEntityTooLargeException", Message: "The request body is too large"})
			}
			return fail(&auth.Error{Status: http.StatusBadRequest, Code: "BadRequestException", Message: "The request body could not be read"})
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	var key *auth.Key
	var err error
	present := false
	if g.Session != nil && r.Header.Get("Authorization") == "" {
		key, err, present = g.Session(r)
	}
	if !present {
		key, err = g.Verify(r, body)
	}
	if err != nil {
		var e *auth.Error
		if errors.As(err, &e) {
			return fail(e)
		}
		return fail(&auth.Error{Status: http.StatusInternalServerError, Code: "InternalFailure", Message: "internal error"})
	}
	var action, resource string
	ok := true
	switch {
	case target != "":
		action, resource = g.CloudMap(target, body)
	case strings.HasPrefix(r.URL.Path, "/v20190125/"):
		action, resource, ok = g.AppMesh(r, body, key.Account)
	case strings.HasPrefix(r.URL.Path, "/v1/"):
		action, resource = g.Weft(r, body, key.Account)
	default:
		ok = false // no such endpoint: the handler answers 404
	}
	if ok {
		if err := (&auth.Principal{Key: key}).Allow(action, resource); err != nil {
			return fail(err.(*auth.Error))
		}
	}
	return r.WithContext(context.WithValue(WithAccount(r.Context(), key.Account), callerKey{}, key)), true
}

// WeftAction names weft's own endpoints under /v1/ as actions
// weft:<Verb><Noun>: GET /v1/proxies is weft:GetProxies, POST /v1/tokens
// weft:CreateToken. extra adds or overrides entries, keyed by
// "METHOD /v1/path". Any other endpoint is weft:<Verb><Path> with the verb
// from the method (Get, Create, Update, Delete) and the path's segments
// capitalised. resource names the resource of a request that has one
// (the node ARN of a token request); the others are "*".
func WeftAction(extra map[string]string, resource func(r *http.Request, body []byte, account string) string) func(r *http.Request, body []byte, account string) (string, string) {
	table := map[string]string{
		"GET /v1/proxies": "weft:GetProxies",
		"POST /v1/tokens": "weft:CreateToken",
	}
	for k, v := range extra {
		table[k] = v
	}
	return func(r *http.Request, body []byte, account string) (string, string) {
		res := "*"
		if resource != nil {
			if s := resource(r, body, account); s != "" {
				res = s
			}
		}
		if a, ok := table[r.Method+" "+r.URL.Path]; ok {
			return a, res
		}
		if a := caAction(r.Method, r.URL.Path); a != "" {
			return a, res
		}
		verb := map[string]string{"GET": "Get", "HEAD": "Get", "POST": "Create", "PUT": "Update", "PATCH": "Update", "DELETE": "Delete"}[r.Method]
		if verb == "" {
			verb = "Call"
		}
		var b strings.Builder
		b.WriteString("weft:" + verb)
		for _, s := range strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/") {
			if s != "" {
				b.WriteString(strings.ToUpper(s[:1]) + s[1:])
			}
		}
		return b.String(), res
	}
}

// caAction names the CA's endpoints (internal/ca), whose paths carry a
// root's fingerprint: GET /v1/ca is weft:GetCA, and the three rotation
// steps weft:AddCARoot, weft:ActivateCARoot and weft:RemoveCARoot.
func caAction(method, path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/ca")
	if !ok {
		return ""
	}
	seg := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case method == "GET" && rest == "":
		return "weft:GetCA"
	case method == "POST" && rest == "/roots":
		return "weft:AddCARoot"
	case method == "POST" && len(seg) == 3 && seg[0] == "roots" && seg[2] == "activate":
		return "weft:ActivateCARoot"
	case method == "DELETE" && len(seg) == 2 && seg[0] == "roots":
		return "weft:RemoveCARoot"
	}
	return ""
}

// WriteJSONError writes an error as awsJson1.1 services (Cloud Map) do:
// the type in x-amzn-ErrorType and __type, and the message.
func WriteJSONError(w http.ResponseWriter, status int, errType, message string) {
	b, _ := json.Marshal(map[string]string{"__type": errType, "Message": message})
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-ErrorType", errType)
	w.WriteHeader(status)
	w.Write(b)
}
