package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// TokenKeyKey is where the server keeps the key that signs join tokens.
// Nothing serves it.
const TokenKeyKey = "auth/token-key"

// Token limits.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 366 * 24 * time.Hour
	maxTokenBytes   = 4096
)

// tokenHeader is the JOSE header of every join token: a JWT signed with
// HMAC-SHA256, so that gRPC's JWT token-file call credentials (gRFC A97,
// grpc-go's credentials/jwt) can send it as they find it.
var tokenHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// LoadTokenKey returns the join-token signing key kept in st, creating a
// random one at the first start.
func LoadTokenKey(ctx context.Context, st store.Store) ([]byte, error) {
	var key []byte
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	_, err := st.Update(ctx, func(tx store.Tx) error {
		kv, ok, err := tx.Get(TokenKeyKey)
		if err != nil {
			return err
		}
		if ok && len(kv.Value) >= 32 {
			key = bytes.Clone(kv.Value)
			return nil
		}
		key = fresh
		return tx.Put(TokenKeyKey, fresh)
	})
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return key, nil
}

// Tokens issues and checks join tokens: JWTs (HS256) naming the resource
// ARN (sub) and the expiry (exp), signed with a key only the server holds.
type Tokens struct {
	key []byte
}

// NewTokens returns an issuer with key (LoadTokenKey).
func NewTokens(key []byte) *Tokens { return &Tokens{key: key} }

type claims struct {
	Issuer   string `json:"iss"` // "weft"
	Resource string `json:"sub"` // virtual node or gateway ARN
	Expires  int64  `json:"exp"` // Unix seconds
	IssuedAt int64  `json:"iat"`
	ID       string `json:"jti"` // random, for logs
}

// Mint returns a token for the resource ARN, valid until exp.
func (t *Tokens) Mint(resource string, now, exp time.Time) (string, error) {
	id := make([]byte, 9)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	b, err := json.Marshal(claims{Issuer: "weft", Resource: resource, Expires: exp.Unix(), IssuedAt: now.Unix(), ID: base64.RawURLEncoding.EncodeToString(id)})
	if err != nil {
		return "", err
	}
	signing := tokenHeader + "." + base64.RawURLEncoding.EncodeToString(b)
	return signing + "." + base64.RawURLEncoding.EncodeToString(t.mac(signing)), nil
}

func (t *Tokens) mac(signing string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(signing))
	return m.Sum(nil)
}

// Errors of Check.
var (
	ErrTokenInvalid = errors.New("invalid join token")
	ErrTokenExpired = errors.New("join token expired")
)

// Check verifies a token and returns the resource ARN it is bound to.
func (t *Tokens) Check(tok string, now time.Time) (resource string, err error) {
	// Only the header weft writes: no other algorithm is ever considered.
	if len(tok) > maxTokenBytes || !strings.HasPrefix(tok, tokenHeader+".") {
		return "", ErrTokenInvalid
	}
	i := strings.LastIndexByte(tok, '.')
	signing, sig := tok[:i], tok[i+1:]
	payload := strings.TrimPrefix(signing, tokenHeader+".")
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, t.mac(signing)) || strings.Contains(payload, ".") {
		return "", ErrTokenInvalid
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", ErrTokenInvalid
	}
	var c claims
	if err := json.Unmarshal(b, &c); err != nil || c.Resource == "" || c.Issuer != "weft" {
		return "", ErrTokenInvalid
	}
	if exp := time.Unix(c.Expires, 0); !now.Before(exp) {
		return "", fmt.Errorf("%w at %s", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
	}
	return c.Resource, nil
}

// ParseResource reads a virtual node or virtual gateway as `weft token
// create --resource` takes it: its ARN, or mesh/<mesh>[@<owner>]/
// virtualNode/<name> (or /virtualGateway/<name>), whose owner defaults to
// owner. It returns the resource's ARN in region.
func ParseResource(s, region, owner string) (string, error) {
	if strings.HasPrefix(s, "arn:") {
		_, ref, err := appmesh.ParseARN(s)
		if err != nil || (ref.Kind != appmesh.KindVirtualNode && ref.Kind != appmesh.KindVirtualGateway) {
			return "", fmt.Errorf("%q is not a virtual node or virtual gateway ARN", s)
		}
		return s, nil
	}
	seg := strings.Split(s, "/")
	if len(seg) != 4 || seg[0] != "mesh" || seg[1] == "" || seg[3] == "" ||
		(seg[2] != string(appmesh.KindVirtualNode) && seg[2] != string(appmesh.KindVirtualGateway)) {
		return "", fmt.Errorf("%q: want mesh/<mesh>/virtualNode/<name>, mesh/<mesh>/virtualGateway/<name> or an ARN", s)
	}
	mesh := seg[1]
	if m, o, ok := strings.Cut(mesh, "@"); ok {
		mesh, owner = m, o
	}
	if mesh == "" || owner == "" {
		return "", fmt.Errorf("%q: empty mesh or owner", s)
	}
	return appmesh.ARN(region, appmesh.Ref{Owner: owner, Mesh: mesh, Kind: appmesh.Kind(seg[2]), Name: seg[3]}), nil
}
