// Package ops runs the App Mesh operations on the store: each Create,
// Describe, Update, Delete, List and tag operation is one store transaction
// that checks App Mesh's rules (references, names in use, quotas, client
// tokens) and writes the resource in the layout of appmesh/keys.go.
//
//	api (HTTP, model validation) -> ops.Service -> store.Update / View
//
// A write operation takes its input as an appmesh.Valid, which only the
// model's validator makes (appmesh.Decode for the API's request document,
// appmesh.Check for a Go caller's input): no caller can skip validation
// by accident, and ops does not walk the model again. The Valid's input is
// not copied again on its way here: a caller that changes it after
// validating it (only a test does, TestWritesDoNotValidateAgain) stores
// what it changed. Reads take their input as
// it is; they store nothing. Errors meant for clients are *appmesh.Error;
// any other error is internal.
package ops

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// Caller is who makes a request.
type Caller struct {
	// Account is the caller's 12-digit account: the owner of the meshes it
	// creates, the resource owner of everything it creates.
	Account string
}

// Config tunes a Service. Zero fields take the defaults.
type Config struct {
	Region string // written into ARNs; default us-east-1
	// Limits are the quotas, each field as given (zero or less: no
	// limit); nil: appmesh.DefaultLimits().
	Limits *appmesh.Limits
	// ClientTokenTTL is how long a clientToken is remembered (default 24h).
	ClientTokenTTL time.Duration
	// Now and NewUID are the clock and the uid source (tests fix them).
	Now    func() time.Time
	NewUID func() string
	// Skipped counts the records a listing, or an update's read of a
	// router's or gateway's routes, leaves out (logged "skipping
	// undecodable record"); nil: not counted.
	Skipped prometheus.Counter
}

// Service runs App Mesh operations on a store. It is safe for concurrent
// use; all state is in the store.
type Service struct {
	st       store.Store
	region   string
	limits   appmesh.Limits
	tokenTTL time.Duration
	now      func() time.Time
	newUID   func() string
	log      *slog.Logger
	skipped  prometheus.Counter // nil: not counted
	k        kinds
}

// New returns a Service on st.
func New(st store.Store, cfg Config, log *slog.Logger) *Service {
	s := &Service{
		st:       st,
		region:   cfg.Region,
		limits:   appmesh.DefaultLimits(),
		tokenTTL: cfg.ClientTokenTTL,
		now:      cfg.Now,
		newUID:   cfg.NewUID,
		log:      log,
		skipped:  cfg.Skipped,
		k:        newKinds(),
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	if cfg.Limits != nil {
		s.limits = *cfg.Limits
	}
	if s.tokenTTL <= 0 {
		s.tokenTTL = 24 * time.Hour
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.newUID == nil {
		s.newUID = uuid.NewString
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// skip logs and counts a stored record a read leaves out (a listing, an
// update's read of a router's routes): one bad record must not fail every
// caller.
func (s *Service) skip(key string, err error) {
	if s.skipped != nil {
		s.skipped.Inc()
	}
	s.log.Error("skipping undecodable record", "key", key, "error", err)
}

// Region returns the region the service writes into ARNs.
func (s *Service) Region() string { return s.region }

// request is what every write needs beyond its input: when it happens, the
// uid a new resource gets, and the idempotency token with the hash of the
// request it stands for. It is computed before the transaction so that a
// retried transaction function does the same thing.
type request struct {
	op    string
	now   time.Time
	uid   string
	token string // "" when the client sent none
	hash  string
}

// prepare returns the request of a write whose input was validated (the
// operation took it as an appmesh.Valid: it is not walked again here).
// token is the input's clientToken; it is left out of the hash, which
// covers everything else the client sent.
func (s *Service) prepare(op string, in any, token *string) (request, error) {
	r := request{op: op, now: s.now(), uid: s.newUID()}
	if token == nil {
		return r, nil
	}
	if len(*token) > 255 {
		return request{}, appmesh.BadRequest("Value at 'clientToken' failed to satisfy constraint: Member must have length less than or equal to 255")
	}
	r.token = *token
	h, err := inputHash(op, in)
	if err != nil {
		return request{}, err
	}
	r.hash = h
	return r, nil
}

// inputHash is the hash a client token's record keeps of its request: the
// operation's name and the input as the Go type encodes it, its top-level
// members sorted and the clientToken left out. Records written by earlier
// servers hold it, so that a retry they would have replayed is still
// replayed: it must not change.
func inputHash(op string, in any) (string, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return "", fmt.Errorf("encode %s input: %w", op, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("hash %s input: %w", op, err)
	}
	delete(m, "clientToken")
	canon, _ := json.Marshal(m) // map keys are sorted: canonical
	sum := sha256.Sum256(append([]byte(op+"\x00"), canon...))
	return fmt.Sprintf("%x", sum), nil
}

// update runs fn in a store transaction and returns what fn produced.
func update[T any](ctx context.Context, s *Service, fn func(tx store.Tx) (T, error)) (T, error) {
	var out T
	_, err := s.st.Update(ctx, func(tx store.Tx) error {
		v, err := fn(tx)
		if err != nil {
			return err
		}
		out = v
		return nil
	})
	return out, err
}

// view runs fn on a store snapshot and returns what fn produced.
func view[T any](ctx context.Context, s *Service, fn func(tx store.Tx) (T, error)) (T, error) {
	var out T
	_, err := s.st.View(ctx, func(tx store.Tx) error {
		v, err := fn(tx)
		if err != nil {
			return err
		}
		out = v
		return nil
	})
	return out, err
}
