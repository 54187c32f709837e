package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/auth"
)

// Session limits' defaults.
const (
	// DefaultSessionTTL is how long a console session lasts after sign-in.
	DefaultSessionTTL = 8 * time.Hour
	// DefaultMaxSessions bounds the server's open sessions; a sign-in
	// beyond gets ThrottlingException.
	DefaultMaxSessions = 1024
	// DefaultMaxSessionsPerKey bounds one key's sessions; its oldest is
	// ended by a sign-in beyond.
	DefaultMaxSessionsPerKey = 16
)

// CookieName is the console session's cookie; CSRFHeader the header that
// must carry the session's CSRF token on every request made with it.
const (
	CookieName = "weft_console"
	CSRFHeader = "X-Weft-Csrf"
)

// KeySource returns the credentials file's current keys.
type KeySource interface {
	Keys() *auth.Keys
}

// Sessions are the console's sign-in sessions, held in memory: a restart
// signs everyone out.
type Sessions struct {
	keys   KeySource
	now    func() time.Time
	ttl    time.Duration
	max    int
	perKey int

	mu   sync.Mutex
	byID map[string]*session // protected by mu; key: the cookie's value
}

// session is one signed-in browser.
type session struct {
	keyID     string
	secretSum [32]byte // the key's secret at sign-in: a changed secret ends the session
	csrf      string
	created   time.Time
	expires   time.Time
}

// SessionLimits bound Sessions; zero fields take the defaults.
type SessionLimits struct {
	TTL         time.Duration
	MaxSessions int
	MaxPerKey   int
}

// NewSessions returns an empty session table over keys; now is the clock
// (nil: time.Now).
func NewSessions(keys KeySource, lim SessionLimits, now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	if lim.TTL <= 0 {
		lim.TTL = DefaultSessionTTL
	}
	if lim.MaxSessions <= 0 {
		lim.MaxSessions = DefaultMaxSessions
	}
	if lim.MaxPerKey <= 0 {
		lim.MaxPerKey = DefaultMaxSessionsPerKey
	}
	return &Sessions{keys: keys, now: now, ttl: lim.TTL, max: lim.MaxSessions, perKey: lim.MaxPerKey, byID: map[string]*session{}}
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func errSession(status int, code, msg string) *auth.Error {
	return &auth.Error{Status: status, Code: code, Message: msg}
}

// signIn checks an access key and its secret and opens a session.
func (s *Sessions) signIn(keyID, secret string) (id string, se *session, err *auth.Error) {
	key := s.keys.Keys().Lookup(keyID)
	given := sha256.Sum256([]byte(secret))
	if key == nil {
		return "", nil, errSession(http.StatusForbidden, auth.CodeUnrecognizedClient, "The security token included in the request is invalid.")
	}
	want := sha256.Sum256([]byte(key.Secret))
	if subtle.ConstantTimeCompare(given[:], want[:]) != 1 {
		return "", nil, errSession(http.StatusForbidden, auth.CodeInvalidSignature, "The secret access key is not the one of this access key.")
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldestID string
	var mine int
	for sid, x := range s.byID {
		if !now.Before(x.expires) {
			delete(s.byID, sid)
			continue
		}
		if x.keyID == keyID {
			mine++
			if oldestID == "" || x.created.Before(s.byID[oldestID].created) {
				oldestID = sid
			}
		}
	}
	if mine >= s.perKey {
		delete(s.byID, oldestID)
	}
	if len(s.byID) >= s.max {
		return "", nil, errSession(http.StatusTooManyRequests, "ThrottlingException", "Too many console sessions are open; try again later.")
	}
	id = randomToken()
	se = &session{keyID: keyID, secretSum: want, csrf: randomToken(), created: now, expires: now.Add(s.ttl)}
	s.byID[id] = se
	return id, se, nil
}

// lookup returns the live session named by r's cookie and its key; present
// is false when r has no session cookie.
func (s *Sessions) lookup(r *http.Request) (se *session, key *auth.Key, err *auth.Error, present bool) {
	c, cerr := r.Cookie(CookieName)
	if cerr != nil || c.Value == "" {
		return nil, nil, nil, false
	}
	s.mu.Lock()
	se = s.byID[c.Value]
	if se != nil && !s.now().Before(se.expires) {
		delete(s.byID, c.Value)
		s.mu.Unlock()
		return nil, nil, errSession(http.StatusForbidden, "ExpiredTokenException", "The console session has expired: sign in again."), true
	}
	s.mu.Unlock()
	if se == nil {
		return nil, nil, errSession(http.StatusForbidden, auth.CodeUnrecognizedClient, "The console session is not valid: sign in again."), true
	}
	key = s.keys.Keys().Lookup(se.keyID)
	if key == nil || sha256.Sum256([]byte(key.Secret)) != se.secretSum {
		s.end(c.Value)
		return nil, nil, errSession(http.StatusForbidden, auth.CodeUnrecognizedClient, "The console session's access key is no longer valid: sign in again."), true
	}
	return se, key, nil, true
}

func (s *Sessions) end(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// Authenticate names the key a request acts as through a console session:
// present is false when r carries no session cookie (SigV4 applies then).
// A request with the cookie must carry the session's CSRF token in
// X-Weft-Csrf, whatever its method, so another site cannot make the
// browser send one. Errors are *auth.Error.
func (s *Sessions) Authenticate(r *http.Request) (key *auth.Key, err error, present bool) {
	se, key, aerr, present := s.lookup(r)
	if !present {
		return nil, nil, false
	}
	if aerr != nil {
		return nil, aerr, true
	}
	if !csrfOK(r, se) {
		return nil, errSession(http.StatusForbidden, auth.CodeAccessDenied, "The request carries a console session cookie without its CSRF token ("+CSRFHeader+")."), true
	}
	return key, nil, true
}

func csrfOK(r *http.Request, se *session) bool {
	got := r.Header.Get(CSRFHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(se.csrf)) == 1
}

// sessionInfo is GET /console/api/session's answer.
type sessionInfo struct {
	// Auth is true when the server has a credentials file: the console
	// must sign in.
	Auth     bool      `json:"auth"`
	SignedIn bool      `json:"signedIn"`
	KeyID    string    `json:"accessKeyId,omitempty"`
	Account  string    `json:"account,omitempty"`
	ARN      string    `json:"arn,omitempty"`
	CSRF     string    `json:"csrf,omitempty"`
	Expires  time.Time `json:"expires,omitzero"`
}

// serveSession serves /console/api/session: GET says whether sign-in is
// needed and who is signed in (with the CSRF token: only this origin can
// read it), POST signs in, DELETE signs out.
func (h *Handler) serveSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	s := h.sessions
	if s == nil {
		if r.Method != http.MethodGet {
			writeErr(w, errSession(http.StatusBadRequest, "BadRequestException", "This server has no credentials file: the console needs no sign-in."))
			return
		}
		writeJSON(w, http.StatusOK, sessionInfo{})
		return
	}
	switch r.Method {
	case http.MethodGet:
		se, key, _, _ := s.lookup(r)
		if se == nil {
			writeJSON(w, http.StatusOK, sessionInfo{Auth: true})
			return
		}
		writeJSON(w, http.StatusOK, info(se, key))
	case http.MethodPost:
		// JSON only: a cross-site form cannot send it without a preflight.
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			writeErr(w, errSession(http.StatusUnsupportedMediaType, "BadRequestException", "Sign in with a JSON body: {\"accessKeyId\": ..., \"secretAccessKey\": ...}."))
			return
		}
		var req struct {
			KeyID  string `json:"accessKeyId"`
			Secret string `json:"secretAccessKey"`
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
		if err != nil || json.Unmarshal(body, &req) != nil || req.KeyID == "" || req.Secret == "" {
			writeErr(w, errSession(http.StatusBadRequest, "BadRequestException", "Sign in with a JSON body: {\"accessKeyId\": ..., \"secretAccessKey\": ...}."))
			return
		}
		id, se, aerr := s.signIn(req.KeyID, req.Secret)
		if aerr != nil {
			writeErr(w, aerr)
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: CookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
			Secure: r.TLS != nil, Expires: se.expires, MaxAge: int(s.ttl / time.Second),
		})
		writeJSON(w, http.StatusOK, info(se, s.keys.Keys().Lookup(se.keyID)))
	case http.MethodDelete:
		se, _, aerr, present := s.lookup(r)
		if present && aerr == nil {
			if !csrfOK(r, se) {
				writeErr(w, errSession(http.StatusForbidden, auth.CodeAccessDenied, "Sign-out needs the session's CSRF token ("+CSRFHeader+")."))
				return
			}
			c, _ := r.Cookie(CookieName)
			s.end(c.Value)
		}
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeErr(w, errSession(http.StatusMethodNotAllowed, "BadRequestException", "GET, POST or DELETE"))
	}
}

func info(se *session, key *auth.Key) sessionInfo {
	in := sessionInfo{Auth: true, SignedIn: true, KeyID: se.keyID, CSRF: se.csrf, Expires: se.expires}
	if key != nil {
		in.Account, in.ARN = key.Account, key.ARN
	}
	return in
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeErr writes an error as the App Mesh REST API does.
func writeErr(w http.ResponseWriter, e *auth.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-amzn-ErrorType", e.Code)
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(struct {
		Message string `json:"message"`
	}{e.Message})
}
