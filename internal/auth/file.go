// Package auth decides who may do what on weft: it holds the credentials
// file (access keys and what each may do, in IAM's words), verifies SigV4
// signatures on API requests and on xDS streams, issues and checks join
// tokens, and proves xDS identities from client certificates.
//
//	--auth-file ──load/reload──▶ Keys (id → secret, account, allow statements)
//	API request ──VerifyHTTP──▶ Principal ──Allow(action, resource)──▶ ok | AccessDenied
//	ADS stream ──XDS.Authorize──▶ SigV4 metadata | Bearer join token | client cert
//
// The file is small on purpose: keys, each with allow statements (actions
// and resource ARNs, `*` and `?` wildcards). There is no deny, no
// condition, no role.
package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// MaxFileBytes bounds the credentials file.
const MaxFileBytes = 1 << 20

// File is the credentials file as written (YAML or JSON):
//
//	keys:
//	  - id: AKIAWEFTADMIN
//	    secret: "..."
//	    account: "111122223333"
//	    user: admin                  # optional: names the caller in errors
//	    allow:
//	      - actions: ["appmesh:*", "servicediscovery:*", "weft:*"]
//	        resources: ["*"]
type File struct {
	Keys []KeyEntry `yaml:"keys" json:"keys"`
}

// KeyEntry is one access key.
type KeyEntry struct {
	ID      string      `yaml:"id" json:"id"`
	Secret  string      `yaml:"secret" json:"secret"`
	Account string      `yaml:"account" json:"account"`
	User    string      `yaml:"user" json:"user"`
	Allow   []Statement `yaml:"allow" json:"allow"`
}

// Statement allows its actions on its resources. Actions are matched
// without regard to case, as IAM does; resources exactly. Both take `*`
// (any run of characters) and `?` (one character).
type Statement struct {
	Actions   []string `yaml:"actions" json:"actions"`
	Resources []string `yaml:"resources" json:"resources"`
}

// Key is a loaded access key. It is immutable.
type Key struct {
	ID, Secret, Account string
	// ARN names the caller in AccessDenied messages:
	// arn:aws:iam::<account>:user/<user or id>.
	ARN   string
	allow []compiled
}

type compiled struct {
	actions, resources []*regexp.Regexp
}

// Keys is one version of the credentials file, by key id. It is immutable.
type Keys struct {
	byID map[string]*Key
}

// Lookup returns the key with that id, or nil.
func (k *Keys) Lookup(id string) *Key {
	if k == nil {
		return nil
	}
	return k.byID[id]
}

// ParseKeys reads a credentials file. Every mistake is reported with the
// key it is in; an unknown field is a mistake.
func ParseKeys(b []byte) (*Keys, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("credentials file is larger than %d bytes", MaxFileBytes)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse credentials file: %w", err)
	}
	if len(f.Keys) == 0 {
		return nil, errors.New("credentials file has no keys")
	}
	ks := &Keys{byID: map[string]*Key{}}
	for i, e := range f.Keys {
		where := fmt.Sprintf("keys[%d]", i)
		if e.ID != "" {
			where += " (" + e.ID + ")"
		}
		switch {
		case e.ID == "":
			return nil, fmt.Errorf("%s: id is required", where)
		case len(e.Secret) < 8:
			return nil, fmt.Errorf("%s: secret is required, at least 8 characters", where)
		case !appmesh.IsAccountID(e.Account):
			return nil, fmt.Errorf("%s: account must be 12 digits, not %q", where, e.Account)
		case ks.byID[e.ID] != nil:
			return nil, fmt.Errorf("%s: the id appears twice", where)
		}
		user := e.User
		if user == "" {
			user = e.ID
		}
		k := &Key{ID: e.ID, Secret: e.Secret, Account: e.Account, ARN: "arn:aws:iam::" + e.Account + ":user/" + user}
		for j, st := range e.Allow {
			if len(st.Actions) == 0 || len(st.Resources) == 0 {
				return nil, fmt.Errorf("%s: allow[%d] needs actions and resources", where, j)
			}
			var c compiled
			for _, a := range st.Actions {
				if !strings.Contains(a, ":") && a != "*" {
					return nil, fmt.Errorf("%s: allow[%d]: action %q is not service:Action (e.g. appmesh:CreateRoute)", where, j, a)
				}
				c.actions = append(c.actions, wildcard(a, true))
			}
			for _, r := range st.Resources {
				if r == "" {
					return nil, fmt.Errorf("%s: allow[%d]: empty resource", where, j)
				}
				c.resources = append(c.resources, wildcard(r, false))
			}
			k.allow = append(k.allow, c)
		}
		ks.byID[e.ID] = k
	}
	return ks, nil
}

// wildcard compiles an IAM pattern: `*` any run, `?` one character.
func wildcard(p string, fold bool) *regexp.Regexp {
	var b strings.Builder
	if fold {
		b.WriteString("(?i)")
	}
	b.WriteString("^")
	for _, r := range p {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// Allowed reports whether one of the key's statements allows the action on
// the resource.
func (k *Key) Allowed(action, resource string) bool {
	for _, st := range k.allow {
		if matchAny(st.actions, action) && matchAny(st.resources, resource) {
			return true
		}
	}
	return false
}

func matchAny(ps []*regexp.Regexp, s string) bool {
	for _, p := range ps {
		if p.MatchString(s) {
			return true
		}
	}
	return false
}

// KeyFile is the credentials file in force: loaded at start, reloaded when
// it changes. A reload that fails keeps the last good version and is
// logged. Safe for concurrent use.
type KeyFile struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[Keys]
	sum  atomic.Pointer[[32]byte] // of the content in force
	// reloaded receives a value after each successful reload (cap 1).
	reloaded chan struct{}
	// changed is closed, and replaced, when a new version is put in
	// force: every holder of the old channel learns of it (Changed).
	changed atomic.Pointer[chan struct{}]
}

// LoadKeyFile reads the credentials file at path; it fails if the file
// cannot be read or parsed.
func LoadKeyFile(path string, log *slog.Logger) (*KeyFile, error) {
	f := &KeyFile{path: path, log: log, reloaded: make(chan struct{}, 1)}
	f.changed.Store(newSignal())
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	ks, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sum := sha256.Sum256(b)
	f.cur.Store(ks)
	f.sum.Store(&sum)
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the credentials file can be read by other users: chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	return f, nil
}

// StaticKeys returns a KeyFile that holds ks and never reloads (tests,
// embedding).
func StaticKeys(ks *Keys) *KeyFile {
	f := &KeyFile{reloaded: make(chan struct{}, 1)}
	f.changed.Store(newSignal())
	f.cur.Store(ks)
	return f
}

// Keys returns the keys in force.
func (f *KeyFile) Keys() *Keys { return f.cur.Load() }

// Reloaded receives a value after each successful reload.
func (f *KeyFile) Reloaded() <-chan struct{} { return f.reloaded }

// Changed returns a channel that is closed when a version of the file
// other than the one in force at the call is put in force: whoever holds
// what a caller was allowed (an open event stream) checks again.
func (f *KeyFile) Changed() <-chan struct{} { return *f.changed.Load() }

// newSignal is a channel to be closed once, for Changed.
func newSignal() *chan struct{} {
	ch := make(chan struct{})
	return &ch
}

func readBounded(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read credentials file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read credentials file: %w", err)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("read credentials file %s: larger than %d bytes", path, MaxFileBytes)
	}
	return b, nil
}

// ReloadInterval is how often Watch looks at the file.
const ReloadInterval = time.Second

// Reload reads the file and puts it in force if its content changed and
// parses. On an error the last good version stays in force.
func (f *KeyFile) Reload() (changed bool, err error) {
	b, err := readBounded(f.path)
	if err != nil {
		return false, err
	}
	return f.apply(b)
}

func (f *KeyFile) apply(b []byte) (bool, error) {
	sum := sha256.Sum256(b)
	if sum == *f.sum.Load() {
		return false, nil
	}
	ks, err := ParseKeys(b)
	if err != nil {
		return false, fmt.Errorf("%s: %w", f.path, err)
	}
	f.cur.Store(ks)
	f.sum.Store(&sum)
	close(*f.changed.Swap(newSignal()))
	select {
	case f.reloaded <- struct{}{}:
	default:
	}
	return true, nil
}

// Watch reloads the file whenever its content changes until ctx ends. The
// file is read at most once per interval (0: ReloadInterval) and at most
// MaxFileBytes of it. A new content is put in force once it has been read
// the same twice in a row, so that a file caught halfway through being
// rewritten is not taken; a rejected version is logged once.
func (f *KeyFile) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = ReloadInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	var pending [32]byte // content seen at the last tick, not yet in force
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := readBounded(f.path)
		if err == nil {
			sum := sha256.Sum256(b)
			if sum == *f.sum.Load() {
				continue
			}
			if sum != pending {
				pending = sum
				continue
			}
			var changed bool
			if changed, err = f.apply(b); changed {
				lastErr = ""
				f.log.Info("credentials file reloaded", "path", f.path, "keys", len(f.Keys().byID))
			}
		}
		if err != nil && err.Error() != lastErr {
			lastErr = err.Error()
			f.log.Error("credentials file rejected; keeping the last good version", "path", f.path, "error", err)
		}
	}
}
