package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// TokenKeyKey is where the server keeps the key that signs join tokens.
// Nothing serves it.
const TokenKeyKey = "auth/token-key"

// Token limits.
const (
	// tokenKeyLen is the length of the signing key, in bytes; a shorter
	// one is replaced at start.
	tokenKeyLen     = 32
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 366 * 24 * time.Hour
	maxTokenBytes   = 4096
)

// LoadTokenKey returns the join-token signing key kept in st, creating a
// random one at the first start.
func LoadTokenKey(ctx context.Context, st store.Store) ([]byte, error) {
	var key []byte
	fresh := make([]byte, tokenKeyLen)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	_, err := st.Update(ctx, func(tx store.Tx) error {
		kv, ok, err := tx.Get(TokenKeyKey)
		if err != nil {
			return err
		}
		if ok && len(kv.Value) >= tokenKeyLen {
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

// CheckTokenKey checks the value of TokenKeyKey as a restore must
// before writing it: a key LoadTokenKey keeps, not one it replaces.
func CheckTokenKey(value []byte) error {
	if len(value) < tokenKeyLen {
		return fmt.Errorf("a join token key of %d bytes; it must have %d at least", len(value), tokenKeyLen)
	}
	return nil
}

// Tokens issues and checks join tokens: JWTs (HS256) naming the resource
// ARN (sub) and the expiry (exp), signed with a key only the server holds.
type Tokens struct {
	key []byte
}

// NewTokens returns an issuer with key (LoadTokenKey).
func NewTokens(key []byte) *Tokens { return &Tokens{key: key} }

// Mint returns a token for the resource ARN, valid until exp: a JWT (HS256)
// that gRPC's JWT token-file call credentials (gRFC A97, grpc-go's
// credentials/jwt) can send as they find it.
func (t *Tokens) Mint(resource string, now, exp time.Time) (string, error) {
	id := make([]byte, 9)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: resource, ExpiresAt: jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(now), ID: base64.RawURLEncoding.EncodeToString(id),
	}).SignedString(t.key)
}

// tokenIssuer is the iss claim of every join token.
const tokenIssuer = "weft"

// Errors of Check.
var (
	ErrTokenInvalid = errors.New("invalid join token")
	ErrTokenExpired = errors.New("join token expired")
)

// Check verifies a token and returns the resource ARN it is bound to. Only
// HS256 with the server's key is accepted; exp is required.
func (t *Tokens) Check(tok string, now time.Time) (resource string, err error) {
	if len(tok) > maxTokenBytes {
		return "", ErrTokenInvalid
	}
	var c jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return t.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(),
		jwt.WithIssuer(tokenIssuer), jwt.WithTimeFunc(func() time.Time { return now }))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired) && c.ExpiresAt != nil:
		return "", fmt.Errorf("%w at %s", ErrTokenExpired, c.ExpiresAt.UTC().Format(time.RFC3339))
	case err != nil || c.Subject == "":
		return "", ErrTokenInvalid
	}
	return c.Subject, nil
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
