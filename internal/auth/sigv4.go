package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Error is an authentication or authorization failure, in AWS's words:
// Code is the x-amzn-ErrorType (UnrecognizedClientException, ...).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Error codes, as AWS answers them.
const (
	CodeMissingToken       = "MissingAuthenticationTokenException"
	CodeIncomplete         = "IncompleteSignatureException"
	CodeInvalidSignature   = "InvalidSignatureException"
	CodeUnrecognizedClient = "UnrecognizedClientException"
	CodeAccessDenied       = "AccessDeniedException"
	CodeContentSHA256      = "XAmzContentSHA256Mismatch"
)

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Algorithm is the only signing algorithm weft accepts.
const Algorithm = "AWS4-HMAC-SHA256"

// Payload hashes with a meaning of their own.
const (
	UnsignedPayload = "UNSIGNED-PAYLOAD"
	EmptySHA256     = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// MaxClockSkew is how far a signature's time may be from the server's, as
// AWS allows.
const MaxClockSkew = 5 * time.Minute

const amzDateFormat = "20060102T150405Z"

// Authorization is a parsed SigV4 Authorization header.
type Authorization struct {
	KeyID         string
	Date          string // YYYYMMDD of the credential scope
	Region        string
	Service       string
	SignedHeaders []string // lower case, as given
	Signature     string   // lower-case hex
}

// ParseAuthorization parses `AWS4-HMAC-SHA256 Credential=<key id>/<date>/
// <region>/<service>/aws4_request, SignedHeaders=a;b, Signature=<hex>`.
// Errors are IncompleteSignatureException, worded as AWS words them.
func ParseAuthorization(h string) (Authorization, error) {
	var a Authorization
	alg, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if alg != Algorithm {
		return a, errorf(http.StatusBadRequest, CodeIncomplete, "Authorization header requires the %s algorithm. Authorization=%s", Algorithm, clip(h))
	}
	var cred, signed, sig string
	var haveCred, haveSigned, haveSig bool
	for _, f := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			return a, errorf(http.StatusBadRequest, CodeIncomplete, "Authorization header requires each component to be of the form key=value. Authorization=%s", clip(h))
		}
		if (k == "Credential" && haveCred) || (k == "SignedHeaders" && haveSigned) || (k == "Signature" && haveSig) {
			return a, errorf(http.StatusBadRequest, CodeIncomplete, "Authorization header has '%s' more than once. Authorization=%s", k, clip(h))
		}
		switch k {
		case "Credential":
			cred, haveCred = v, true
		case "SignedHeaders":
			signed, haveSigned = v, true
		case "Signature":
			sig, haveSig = v, true
		default:
			return a, errorf(http.StatusBadRequest, CodeIncomplete, "Authorization header has an unknown component %q. Authorization=%s", clip(k), clip(h))
		}
	}
	var missing []string
	for _, m := range []struct {
		name string
		ok   bool
	}{{"Credential", haveCred}, {"Signature", haveSig}, {"SignedHeaders", haveSigned}} {
		if !m.ok {
			missing = append(missing, "Authorization header requires '"+m.name+"' parameter.")
		}
	}
	if len(missing) > 0 {
		return a, errorf(http.StatusBadRequest, CodeIncomplete, "%s Authorization=%s", strings.Join(missing, " "), clip(h))
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[0] == "" || parts[2] == "" || parts[3] == "" || parts[4] != "aws4_request" || !isDate(parts[1]) {
		return a, errorf(http.StatusBadRequest, CodeIncomplete, "Credential should be of the form <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request, not %q.", clip(cred))
	}
	a.KeyID, a.Date, a.Region, a.Service = parts[0], parts[1], parts[2], parts[3]
	if signed == "" {
		return a, errorf(http.StatusBadRequest, CodeIncomplete, "SignedHeaders is empty. Authorization=%s", clip(h))
	}
	a.SignedHeaders = strings.Split(signed, ";")
	for i, n := range a.SignedHeaders {
		if n == "" || n != strings.ToLower(n) || (i > 0 && a.SignedHeaders[i-1] >= n) || !token(n) {
			return a, errorf(http.StatusBadRequest, CodeIncomplete, "SignedHeaders must be lower-case header names, sorted, separated by ';', not %q.", clip(signed))
		}
	}
	if len(sig) != 64 || !isHex(sig) {
		return a, errorf(http.StatusBadRequest, CodeIncomplete, "Signature must be 64 lower-case hex digits. Authorization=%s", clip(h))
	}
	a.Signature = sig
	return a, nil
}

// clip keeps error messages (and logs) short whatever the client sent.
func clip(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}

func isDate(s string) bool {
	if len(s) != 8 {
		return false
	}
	_, err := time.Parse("20060102", s)
	return err == nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// token reports whether s is an HTTP header name.
func token(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Verifier checks SigV4 signatures against a credentials file.
type Verifier struct {
	Keys *KeyFile
	// Now is the server's clock; nil is time.Now.
	Now func() time.Time
	// Services are the signing names accepted; empty accepts any.
	Services []string

	fast signingKeys

	mu sync.Mutex
	// signers are the SDK signers by key and credential scope (signerFor).
	signers map[string]*v4.Signer
}

// maxSigners bounds Verifier.signers, and maxSignerScope the length of a
// scope given a signer of its own.
const maxSigners, maxSignerScope = 64, 64

// signerFor returns a signer for a key, region and service. The SDK's
// signer caches the keys it derives by key ID and scope, without bound,
// and the scope is the client's to choose: with a known key ID and a
// wrong signature, any region was an entry kept for the life of the
// server. So each scope has a signer of its own, at most maxSigners of
// them (all dropped when a new one would pass that), and a long scope
// gets one for the request alone. The secret is part of a signer's key:
// the SDK's cache does not look at it, and a signer kept across a key
// file's reload went on accepting a rotated key's old secret until the
// day's end.
func (v *Verifier) signerFor(key *Key, region, service string) *v4.Signer {
	newSigner := func() *v4.Signer {
		return v4.NewSigner(func(o *v4.SignerOptions) { o.DisableHeaderHoisting = true })
	}
	scope := region + "/" + service
	if len(scope) > maxSignerScope {
		return newSigner()
	}
	id := scope + "\x00" + key.ID + "\x00" + key.Secret
	v.mu.Lock()
	defer v.mu.Unlock()
	if sg := v.signers[id]; sg != nil {
		return sg
	}
	if v.signers == nil || len(v.signers) >= maxSigners {
		v.signers = map[string]*v4.Signer{}
	}
	sg := newSigner()
	v.signers[id] = sg
	return sg
}

// signed is what a signature covers, rebuilt from what was received.
type signed struct {
	method, scheme, host, path, rawPath, rawQuery string
	header                                        func(name string) []string
	contentLength                                 int64
	payloadHash                                   string
}

// verify checks one Authorization value and the request it signs, and
// returns the key that signed it.
func (v *Verifier) verify(ctx context.Context, authz string, s signed) (*Key, error) {
	a, err := ParseAuthorization(authz)
	if err != nil {
		return nil, err
	}
	if len(v.Services) > 0 && !contains(v.Services, a.Service) {
		return nil, errorf(http.StatusForbidden, CodeInvalidSignature, "Credential should be scoped to correct service: '%s'.", strings.Join(v.Services, "' or '"))
	}
	dates := s.header("x-amz-date")
	if len(dates) == 0 {
		return nil, errorf(http.StatusBadRequest, CodeIncomplete, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=%s", clip(authz))
	}
	t, err := time.Parse(amzDateFormat, dates[0])
	if err != nil {
		return nil, errorf(http.StatusBadRequest, CodeIncomplete, "X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z', not %q.", clip(dates[0]))
	}
	if d := t.Format("20060102"); d != a.Date {
		return nil, errorf(http.StatusForbidden, CodeInvalidSignature, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", a.Date, d, dates[0])
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	n := now().UTC()
	switch {
	case t.Before(n.Add(-MaxClockSkew)):
		return nil, errorf(http.StatusForbidden, CodeInvalidSignature, "Signature expired: %s is now earlier than %s (%s - 5 min.)",
			t.Format(amzDateFormat), n.Add(-MaxClockSkew).Format(amzDateFormat), n.Format(amzDateFormat))
	case t.After(n.Add(MaxClockSkew)):
		return nil, errorf(http.StatusForbidden, CodeInvalidSignature, "Signature not yet current: %s is still later than %s (%s + 5 min.)",
			t.Format(amzDateFormat), n.Add(MaxClockSkew).Format(amzDateFormat), n.Format(amzDateFormat))
	}
	key := v.Keys.Keys().Lookup(a.KeyID)
	if key == nil {
		return nil, errorf(http.StatusForbidden, CodeUnrecognizedClient, "The security token included in the request is invalid.")
	}
	if !contains(a.SignedHeaders, "host") {
		return nil, errorf(http.StatusForbidden, CodeInvalidSignature, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	// The common request first (fastsig.go); a mismatch there, or a
	// request of another form, is decided by the SDK signer.
	if sig, ok := v.fast.fastSignature(key, a, t, s); ok && subtle.ConstantTimeCompare([]byte(sig), []byte(a.Signature)) == 1 {
		return key, nil
	}
	want, err := sign(ctx, v.signerFor(key, a.Region, a.Service), key, a, t, s)
	if err != nil {
		return nil, err
	}
	// Constant time over the signature; the signed header list is public.
	if strings.Join(want.SignedHeaders, ";") != strings.Join(a.SignedHeaders, ";") || subtle.ConstantTimeCompare([]byte(want.Signature), []byte(a.Signature)) != 1 {
		return nil, errorf(http.StatusForbidden, CodeInvalidSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return key, nil
}

// sign signs, with aws-sdk-go-v2's signer, a request rebuilt with exactly
// the headers the client signed, and returns the Authorization it gets.
// The signer adds Host (from the request), Content-Length (when positive),
// X-Amz-Date and X-Amz-Security-Token itself, so those are given as fields
// of the request and the credentials, not as headers.
func sign(ctx context.Context, signer *v4.Signer, key *Key, a Authorization, t time.Time, s signed) (Authorization, error) {
	u := &url.URL{Scheme: s.scheme, Host: s.host, Path: s.path, RawPath: s.rawPath, RawQuery: s.rawQuery}
	req := &http.Request{Method: s.method, URL: u, Host: s.host, Header: http.Header{}}
	creds := aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret}
	for _, name := range a.SignedHeaders {
		switch name {
		case "host", "x-amz-date":
		case "content-length":
			req.ContentLength = s.contentLength
		case "x-amz-security-token":
			if vs := s.header(name); len(vs) > 0 {
				creds.SessionToken = vs[0]
			}
		default:
			if vs := s.header(name); len(vs) > 0 {
				req.Header[http.CanonicalHeaderKey(name)] = vs
			}
		}
	}
	err := signer.SignHTTP(ctx, creds, req, s.payloadHash, a.Service, a.Region, t)
	if err != nil {
		return Authorization{}, fmt.Errorf("sign: %w", err)
	}
	got, err := ParseAuthorization(req.Header.Get("Authorization"))
	if err != nil {
		return Authorization{}, fmt.Errorf("parse own signature: %w", err)
	}
	return got, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// VerifyHTTP checks a request's SigV4 Authorization header over body (the
// whole request body, already read) and returns the key that signed it.
// Errors are *Error. Presigned query strings are refused.
func (v *Verifier) VerifyHTTP(r *http.Request, body []byte) (*Key, error) {
	if r.URL.RawQuery != "" { // parsed only when there is one
		q := r.URL.Query()
		if q.Has("X-Amz-Signature") || q.Has("X-Amz-Credential") || q.Has("X-Amz-Algorithm") {
			return nil, errorf(http.StatusBadRequest, CodeIncomplete, "Query-string (presigned) authentication is not supported: sign the Authorization header.")
		}
	}
	authz := r.Header.Values("Authorization")
	if len(authz) == 0 || authz[0] == "" {
		return nil, errorf(http.StatusForbidden, CodeMissingToken, "Missing Authentication Token")
	}
	if len(authz) > 1 {
		return nil, errorf(http.StatusBadRequest, CodeIncomplete, "More than one Authorization header.")
	}
	sum := sha256.Sum256(body)
	computed := hex.EncodeToString(sum[:])
	hash := computed
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" {
		switch {
		case h == UnsignedPayload:
			hash = h
		case h != computed:
			return nil, errorf(http.StatusBadRequest, CodeContentSHA256, "The provided 'x-amz-content-sha256' header does not match what was computed.")
		}
	}
	return v.verify(r.Context(), authz[0], signedHTTP(r, len(body), hash))
}

// signedHTTP is what a signature of r covers, its body being n bytes
// whose hash is payloadHash.
func signedHTTP(r *http.Request, n int, payloadHash string) signed {
	return signed{
		method: r.Method, host: r.Host, path: r.URL.Path, rawPath: r.URL.RawPath, rawQuery: r.URL.RawQuery,
		header:        func(name string) []string { return r.Header.Values(name) },
		contentLength: int64(n),
		payloadHash:   payloadHash,
	}
}

// Principal is who a verified request comes from.
type Principal struct {
	Key *Key
}

// Account is the caller's account.
func (p *Principal) Account() string { return p.Key.Account }

// Allow returns nil if the caller may perform action on resource, else an
// AccessDeniedException worded as IAM words it.
func (p *Principal) Allow(action, resource string) error {
	if p.Key.Allowed(action, resource) {
		return nil
	}
	return Denied(p.Key, action, resource)
}

// Denied is the AccessDeniedException for key, action and resource.
func Denied(key *Key, action, resource string) *Error {
	return errorf(http.StatusForbidden, CodeAccessDenied, "User: %s is not authorized to perform: %s on resource: %s", key.ARN, action, resource)
}
