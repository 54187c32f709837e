package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/store"
)

// Config configures an Authority.
type Config struct {
	// TrustDomain of the SPIFFE IDs; DefaultTrustDomain when empty.
	TrustDomain string
	// ImportCert and ImportKey, PEM, are an existing CA to sign with
	// instead of generating one at first start (see ParseRoot).
	ImportCert, ImportKey []byte
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Rand is the randomness of keys and serials; crypto/rand when nil.
	Rand io.Reader
}

// Authority is weft server's CA: it keeps the State in the store and in
// memory, changes it through the three rotation steps, and answers for
// the trust pool. Safe for concurrent use. The xDS server reads the state
// from the store itself (it follows the store's watch), so that what it
// serves always matches a store revision.
type Authority struct {
	st          store.Store
	trustDomain string
	now         func() time.Time
	rand        io.Reader
	log         *slog.Logger

	mu    sync.Mutex // serialises the rotation steps; protects state
	state *State
	pool  *x509.CertPool
}

// Open loads the CA from the store, creating it when the store holds none:
// imported from cfg.ImportCert/ImportKey, else a new root. A CA to import
// into a store that already holds another is an error: it is introduced
// with AddRoot instead.
func Open(ctx context.Context, st store.Store, cfg Config, log *slog.Logger) (*Authority, error) {
	a := &Authority{st: st, trustDomain: cfg.TrustDomain, now: cfg.Now, rand: cfg.Rand, log: log}
	if a.trustDomain == "" {
		a.trustDomain = DefaultTrustDomain
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	var imported *Root
	if len(cfg.ImportCert) > 0 || len(cfg.ImportKey) > 0 {
		if len(cfg.ImportCert) == 0 || len(cfg.ImportKey) == 0 {
			return nil, errors.New("import CA: give both a certificate and a key")
		}
		r, err := ParseRoot(cfg.ImportCert, cfg.ImportKey, a.now())
		if err != nil {
			return nil, fmt.Errorf("import CA: %w", err)
		}
		imported = r
	}
	// Generated outside the transaction, which may run more than once.
	var generated *Root
	if imported == nil {
		r, err := NewRoot(a.rand, a.now(), a.trustDomain)
		if err != nil {
			return nil, err
		}
		generated = r
	}
	var created bool
	var state *State
	_, err := st.Update(ctx, func(tx store.Tx) error {
		created = false
		kv, ok, err := tx.Get(StateKey)
		if err != nil {
			return err
		}
		if ok {
			s, err := Decode(kv.Value)
			if err != nil {
				return err
			}
			if imported != nil {
				if _, err := s.Find(imported.Fingerprint()); err != nil {
					return fmt.Errorf("import CA: the store already holds a CA (signer %s); introduce %s with `weft ca add-root` instead", s.SignerRoot().Fingerprint(), imported.Fingerprint())
				}
			}
			state = s
			return nil
		}
		r := generated
		if imported != nil {
			r = imported
		}
		state = &State{Roots: []*Root{r}}
		v, err := state.Encode()
		if err != nil {
			return err
		}
		created = true
		return tx.Put(StateKey, v)
	})
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	a.set(state)
	if created {
		log.Info("certificate authority created", "fingerprint", state.SignerRoot().Fingerprint(), "imported", imported != nil, "not_after", state.SignerRoot().Cert.NotAfter)
	}
	return a, nil
}

func (a *Authority) set(s *State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.state, a.pool = s, s.Pool()
}

// TrustDomain is the SPIFFE trust domain of the mesh.
func (a *Authority) TrustDomain() string { return a.trustDomain }

// TrustPool is the pool of every trusted root, following rotation. The
// pool returned is never modified.
func (a *Authority) TrustPool() *x509.CertPool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pool
}

// State is the current state.
func (a *Authority) State() *State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// change applies one rotation step to the state the store holds, in one
// transaction, and returns the new state.
func (a *Authority) change(ctx context.Context, step func(*State) (*State, error)) (*State, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next *State
	_, err := a.st.Update(ctx, func(tx store.Tx) error {
		kv, ok, err := tx.Get(StateKey)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("the store holds no CA: %w", ErrNotFound)
		}
		cur, err := Decode(kv.Value)
		if err != nil {
			return err
		}
		if next, err = step(cur); err != nil {
			return err
		}
		v, err := next.Encode()
		if err != nil {
			return err
		}
		return tx.Put(StateKey, v)
	})
	if err != nil {
		return nil, err
	}
	a.state, a.pool = next, next.Pool()
	return next, nil
}

// AddRoot introduces a root, trusted in every bundle but not signing: the
// CA in certPEM/keyPEM (see ParseRoot), or a new one when both are empty.
// Step 1 of a rotation.
func (a *Authority) AddRoot(ctx context.Context, certPEM, keyPEM []byte) (*Root, error) {
	now := a.now()
	var r *Root
	var err error
	switch {
	case len(certPEM) == 0 && len(keyPEM) == 0:
		r, err = NewRoot(a.rand, now, a.trustDomain)
	case len(certPEM) == 0 || len(keyPEM) == 0:
		err = fmt.Errorf("give both a certificate and a private key, or neither to generate a root: %w", ErrInvalid)
	default:
		r, err = ParseRoot(certPEM, keyPEM, now)
	}
	if err != nil {
		return nil, err
	}
	if _, err := a.change(ctx, func(s *State) (*State, error) { return s.WithRoot(r) }); err != nil {
		return nil, err
	}
	a.log.Info("CA root added", "fingerprint", r.Fingerprint(), "imported", r.Imported)
	return r, nil
}

// Activate makes the root with fingerprint fp (or a prefix of it) sign the
// leaf certificates; every proxy's leaf is re-issued. Step 2.
func (a *Authority) Activate(ctx context.Context, fp string) (*Root, error) {
	var r *Root
	_, err := a.change(ctx, func(s *State) (*State, error) {
		i, err := s.Find(fp)
		if err != nil {
			return nil, err
		}
		r = s.Roots[i]
		return s.Activated(i, a.now())
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("CA root activated", "fingerprint", r.Fingerprint())
	return r, nil
}

// RemoveRoot stops trusting the root with fingerprint fp (or a prefix of
// it), which must not be the signer. Step 3.
func (a *Authority) RemoveRoot(ctx context.Context, fp string) (*Root, error) {
	var r *Root
	_, err := a.change(ctx, func(s *State) (*State, error) {
		i, err := s.Find(fp)
		if err != nil {
			return nil, err
		}
		r = s.Roots[i]
		return s.Without(i)
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("CA root removed", "fingerprint", r.Fingerprint())
	return r, nil
}
