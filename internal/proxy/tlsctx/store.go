// Package tlsctx is weft proxy's TLS: it compiles Envoy's
// DownstreamTlsContext and UpstreamTlsContext into handshakes with
// crypto/tls, and keeps the certificates and trust bundles they name
// current: files re-read when they change on disk, secrets from SDS on the
// ADS stream and from an SDS server on a Unix socket.
//
// Compiled contexts hold entries of a Store, not certificates: each entry's
// material is swapped atomically when a file is rewritten or a secret
// rotates, and every new handshake reads the current material. Connections
// already established keep the material they were made with.
package tlsctx

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// FilePoll is how often files named by TLS contexts are checked for
// changes (size, modification time, identity). A stat of a handful of
// files a second costs nothing measurable, sees a rewrite in place, a
// rename over the file and a symlink swap (Kubernetes secret volumes)
// alike, and needs no inotify watch per directory.
const FilePoll = time.Second

// Source says where an entry's material comes from.
type Source uint8

// Sources of material.
const (
	FromFile Source = iota
	FromADS         // SDS over the ADS stream
	FromSDS         // the SDS server on the Unix socket
)

func (s Source) String() string {
	switch s {
	case FromADS:
		return "ads"
	case FromSDS:
		return "sds"
	}
	return "file"
}

// Material is one version of a certificate (with its key) or of a trust
// bundle. It is immutable.
type Material struct {
	Cert  *tls.Certificate // Leaf set; nil for trust
	Roots *x509.CertPool   // nil for certificates
	// VC is a validation secret's context (SAN matchers and the like
	// besides the trusted CA); merged into the listener's or cluster's
	// default validation context, as Envoy merges them.
	VC      *tlsv3.CertificateValidationContext
	Secret  *tlsv3.Secret // as received, for /config_dump (redacted there)
	Version string
	Updated time.Time
}

type stamp struct {
	fi os.FileInfo
}

func (s stamp) same(fi os.FileInfo) bool {
	return s.fi != nil && fi != nil && os.SameFile(s.fi, fi) && s.fi.Size() == fi.Size() && s.fi.ModTime().Equal(fi.ModTime())
}

// entry is one certificate or trust bundle some context uses.
type entry struct {
	src   Source
	name  string   // secret name; for files, the paths
	paths []string // files: certificate chain and key, or the trust bundle
	trust bool     // a trust bundle (validation context), not a certificate
	field string   // the first field that named it, for messages
	cur   atomic.Pointer[Material]
	// created and fetchTimeout (initial_fetch_timeout, 0 when unset)
	// say until when a secret that has not arrived holds up LIVE;
	// protected by Store.mu.
	created      time.Time
	fetchTimeout time.Duration

	stamps []stamp // files; set at creation, then owned by Poll (under Store.pollMu)
}

// Load returns the current material, or nil while a secret has not
// arrived.
func (e *entry) Load() *Material { return e.cur.Load() }

type key struct {
	src   Source
	name  string
	trust bool
}

// Store holds every entry of one proxy.
type Store struct {
	log *slog.Logger

	reloadOK, reloadFailed *stats.Counter
	expired                *stats.Counter // certificate files loaded past their NotAfter
	sdsUpdate, sdsRejected *stats.Counter

	pollMu  sync.Mutex // one Poll at a time
	mu      sync.Mutex
	entries map[key]*entry // protected by mu
	// sdsSocket is set when an SDS server on a Unix socket serves the
	// secrets of cluster static_cluster_sds_unix_socket.
	sdsSocket bool
	// wanted is signalled when the set of SDS-socket names changes;
	// buffered 1.
	wanted chan struct{}
}

// NewStore returns an empty store. sdsSocket says whether secrets on the
// SDS socket can be served (weft proxy --sds-socket).
func NewStore(st *stats.Store, log *slog.Logger, sdsSocket bool) *Store {
	sc := st.Scope("tls_files.", "weft_tls_files_")
	sds := st.Scope("sds.", "weft_sds_")
	return &Store{log: log, entries: map[key]*entry{}, sdsSocket: sdsSocket, wanted: make(chan struct{}, 1),
		reloadOK: sc.Counter("reload_success"), reloadFailed: sc.Counter("reload_failed"),
		expired:   sc.Counter("expired_certificate"),
		sdsUpdate: sds.Counter("update_success"), sdsRejected: sds.Counter("update_rejected")}
}

// file returns the entry for a certificate (chain and key files) or a
// trust bundle (one file), loading it now when new. A file that cannot be
// read or parsed is an error naming field.
func (s *Store) file(field string, trust bool, paths ...string) (*entry, error) {
	k := key{src: FromFile, name: joinPaths(paths), trust: trust}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[k]; ok {
		return e, nil
	}
	e := &entry{src: FromFile, name: k.name, paths: paths, trust: trust, field: field}
	m, stamps, err := loadFiles(paths, trust)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	e.stamps = stamps
	e.cur.Store(m)
	s.entries[k] = e
	s.noteExpired(field, k.name, m)
	return e, nil
}

// noteExpired logs and counts a certificate loaded from files after its
// NotAfter. Envoy loads such a certificate and serves it (peers then
// refuse it); it only reports the expiry (days_until_first_cert_expiring,
// /certs). weft proxy does the same and does not NACK: the update is
// valid configuration, and refusing it would keep an older certificate
// that may be just as expired. The counter is tls_files.expired_certificate.
func (s *Store) noteExpired(field, files string, m *Material) {
	if m.Cert == nil || m.Cert.Leaf == nil {
		return
	}
	if na := m.Cert.Leaf.NotAfter; time.Now().After(na) {
		s.expired.Inc()
		s.log.Warn("TLS certificate is expired; serving it as Envoy does", "field", field, "files", files, "notAfter", na)
	}
}

// secret returns the entry of a secret served by src, creating it
// (without material) when new.
func (s *Store) secret(src Source, name string, trust bool, field string) *entry {
	k := key{src: src, name: name, trust: trust}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[k]; ok {
		return e
	}
	e := &entry{src: src, name: name, trust: trust, field: field, created: time.Now()}
	s.entries[k] = e
	if src == FromSDS {
		s.signalWanted()
	}
	return e
}

func (s *Store) signalWanted() {
	select {
	case s.wanted <- struct{}{}:
	default:
	}
}

func joinPaths(paths []string) string {
	var b bytes.Buffer
	for i, p := range paths {
		if i > 0 {
			b.WriteString(" + ")
		}
		b.WriteString(p)
	}
	return b.String()
}

// loadFiles reads and parses a chain and key, or a trust bundle.
func loadFiles(paths []string, trust bool) (*Material, []stamp, error) {
	var data [][]byte
	var stamps []stamp
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		data = append(data, b)
		stamps = append(stamps, stamp{fi})
	}
	var m *Material
	var err error
	if trust {
		m, err = parseTrust(data[0], paths[0])
	} else {
		m, err = parseCert(data[0], data[1], paths[0], paths[1])
	}
	if err != nil {
		return nil, nil, err
	}
	m.Updated = time.Now()
	return m, stamps, nil
}

// parseCert parses a PEM chain and key that must match.
func parseCert(chain, key []byte, chainName, keyName string) (*Material, error) {
	if len(bytes.TrimSpace(chain)) == 0 {
		return nil, fmt.Errorf("%s: empty certificate chain", chainName)
	}
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("certificate %s and key %s: %w", chainName, keyName, err)
	}
	return &Material{Cert: &c}, nil // Go 1.23+ sets c.Leaf
}

// parseTrust parses a PEM bundle of CA certificates; one at least.
func parseTrust(pemBytes []byte, name string) (*Material, error) {
	pool := x509.NewCertPool()
	n := 0
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", name, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in the trust bundle", name)
	}
	return &Material{Roots: pool}, nil
}

// Run re-reads changed files every FilePoll until ctx ends. A file that
// no longer parses keeps the last good material; it is logged and counted
// (tls_files.reload_failed) and tried again when it changes.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(FilePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Poll()
		}
	}
}

// Poll checks every file entry once.
func (s *Store) Poll() {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	s.mu.Lock()
	var files []*entry
	for _, e := range s.entries {
		if e.src == FromFile {
			files = append(files, e)
		}
	}
	s.mu.Unlock()
	for _, e := range files {
		changed := false
		next := make([]stamp, len(e.paths))
		for i, p := range e.paths {
			fi, err := os.Stat(p)
			if err != nil {
				fi = nil
			}
			next[i] = stamp{fi}
			if !e.stamps[i].same(fi) {
				changed = true
			}
		}
		if !changed {
			continue
		}
		m, stamps, err := loadFiles(e.paths, e.trust)
		if err != nil {
			// Not tried again until a file changes once more.
			e.stamps = next
			s.reloadFailed.Inc()
			s.log.Warn("TLS file changed but cannot be used; keeping the previous one", "files", e.name, "err", err)
			continue
		}
		e.stamps = stamps
		e.cur.Store(m)
		s.reloadOK.Inc()
		s.noteExpired(e.field, e.name, m)
		s.log.Info("TLS file reloaded", "files", e.name)
	}
}

// Refs are the files and secrets some configuration uses.
type Refs struct {
	Files []string
	ADS   []string // secret names on the ADS stream
	SDS   []string // secret names on the SDS socket
}

// Retain drops the entries that refs do not name: their files are no
// longer polled and their secrets no longer asked for. Contexts still
// holding them keep their last material.
func (s *Store) Retain(refs Refs) {
	keep := map[key]bool{}
	s.mu.Lock()
	defer s.mu.Unlock()
	files := map[string]bool{}
	for _, f := range refs.Files {
		files[f] = true
	}
	ads := map[string]bool{}
	for _, n := range refs.ADS {
		ads[n] = true
	}
	sds := map[string]bool{}
	for _, n := range refs.SDS {
		sds[n] = true
	}
	sdsChanged := false
	for k, e := range s.entries {
		switch k.src {
		case FromFile:
			all := true
			for _, p := range e.paths {
				all = all && files[p]
			}
			keep[k] = all
		case FromADS:
			keep[k] = ads[k.name]
		case FromSDS:
			keep[k] = sds[k.name]
			sdsChanged = sdsChanged || !keep[k]
		}
		if !keep[k] {
			delete(s.entries, k)
		}
	}
	if sdsChanged {
		s.signalWanted()
	}
}

func (s *Store) setFetchTimeout(e *entry, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.fetchTimeout == 0 || d < e.fetchTimeout {
		e.fetchTimeout = d
	}
}

// Missing returns the secrets of src that have no material yet and whose
// initial_fetch_timeout, if set, has not passed at now; next is the
// earliest time one of those timeouts passes (zero: none).
func (s *Store) Missing(src Source, now time.Time) (names []string, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, e := range s.entries {
		if k.src != src || e.Load() != nil {
			continue
		}
		if e.fetchTimeout > 0 {
			end := e.created.Add(e.fetchTimeout)
			if !now.Before(end) {
				continue
			}
			if next.IsZero() || end.Before(next) {
				next = end
			}
		}
		out = append(out, k.name)
	}
	sort.Strings(out)
	return slicesCompact(out), next
}

// Names returns the secret names of src the store holds.
func (s *Store) Names(src Source) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.entries {
		if k.src == src {
			out = append(out, k.name)
		}
	}
	sort.Strings(out)
	return slicesCompact(out)
}

func slicesCompact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// CheckSecrets parses secrets without applying them: an error names the
// secret and field (a NACK).
func CheckSecrets(secrets []*tlsv3.Secret) (map[string]*Material, error) {
	out := map[string]*Material{}
	var errs []error
	for _, sec := range secrets {
		m, err := parseSecret(sec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[sec.GetName()] = m
	}
	return out, errors.Join(errs...)
}

// SetSecrets installs parsed secrets of src (from CheckSecrets) with their
// version: new handshakes use them at once. A secret whose type does not
// fit how a context uses its name (a trust bundle where a certificate is
// expected) is an error and nothing changes.
func (s *Store) SetSecrets(src Source, version string, ms map[string]*Material) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	type set struct {
		e *entry
		m *Material
	}
	var sets []set
	var errs []error
	now := time.Now()
	for name, m := range ms {
		for _, trust := range []bool{false, true} {
			e, ok := s.entries[key{src: src, name: name, trust: trust}]
			if !ok {
				continue
			}
			if trust != (m.Roots != nil) {
				want := "tls_certificate"
				if trust {
					want = "validation_context"
				}
				errs = append(errs, fmt.Errorf("secret %s: used by %s, which needs a %s secret", name, e.field, want))
				continue
			}
			mm := *m
			mm.Version, mm.Updated = version, now
			sets = append(sets, set{e, &mm})
		}
	}
	if len(errs) > 0 {
		s.sdsRejected.Inc()
		return errors.Join(errs...)
	}
	for _, x := range sets {
		x.e.cur.Store(x.m)
	}
	s.sdsUpdate.Inc()
	return nil
}

// SecretState is one dynamic secret for /config_dump.
type SecretState struct {
	Name    string
	Source  Source
	Secret  *tlsv3.Secret // nil while warming (not arrived)
	Version string
	Updated time.Time
}

// Secrets lists the dynamic secrets, sorted by name.
func (s *Store) Secrets() []SecretState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SecretState
	for k, e := range s.entries {
		if k.src == FromFile {
			continue
		}
		st := SecretState{Name: k.name, Source: k.src}
		if m := e.Load(); m != nil {
			st.Secret, st.Version, st.Updated = m.Secret, m.Version, m.Updated
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
