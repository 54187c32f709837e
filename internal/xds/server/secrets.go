package server

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Secrets (SDS over ADS, seam S1/S3). The machine serves, per identity,
// the secrets its translation references (translate.Resources.Secrets):
// a name in a certificate role is the identity's leaf certificate, issued
// by the CA the store holds (internal/ca), a name in a validation role is
// the trust bundle. Leaves are kept per virtual node or gateway (the
// replicas, and the Envoy and gRPC flavours of a node, share one), renewed
// at two thirds of their life (the runner arms a timer on its clock for
// machine.RenewAt), and
// re-issued when the signing root or the node's DNS names change. A
// renewal or a CA change rebuilds the secrets alone: the other types keep
// their versions and are not resent.

// CertificateStatus is the leaf certificate served to a proxy.
type CertificateStatus struct {
	SPIFFEID string    `json:"spiffeId"`
	DNSNames []string  `json:"dnsNames,omitempty"`
	Serial   string    `json:"serial"` // hex
	NotAfter time.Time `json:"notAfter"`
	RenewAt  time.Time `json:"renewAt"`
	Signer   string    `json:"signer"` // fingerprint of the signing root
}

// leafKey names the owner of a leaf: a virtual node or gateway.
type leafKey struct {
	owner, mesh string
	kind        appmesh.Kind
	name        string
}

func leafKeyOf(id translate.Identity) leafKey {
	return leafKey{id.MeshOwner, id.Mesh, id.Kind, id.Name}
}

// leafState is one issued leaf and the identities serving it.
type leafState struct {
	leaf  *ca.Leaf
	users map[translate.Identity]struct{}
}

// loadCA reads the CA state from a store snapshot; nil when there is none.
// decodeErr is a state that does not decode (left out); err, the store's.
func loadCA(tx store.Tx) (st *ca.State, decodeErr, err error) {
	kv, ok, err := tx.Get(ca.StateKey)
	if err != nil || !ok {
		return nil, nil, err
	}
	st, decodeErr = ca.Decode(kv.Value)
	return st, decodeErr, nil
}

// applyCA follows a change of the CA's state key and reports whether
// what the machine serves from it (bundle or signer) changed.
func (c *machine) applyCA(ev store.Event) bool {
	if ev.KV.Key != ca.StateKey {
		return false
	}
	var next *ca.State
	if ev.Type == store.EventPut {
		s, err := ca.Decode(ev.KV.Value)
		if err != nil {
			c.log.Error("ignoring undecodable CA state", "error", err)
			return false
		}
		next = s
	}
	prev := c.ca
	c.ca = next
	switch {
	case prev == nil || next == nil:
		return prev != next
	default:
		return string(prev.Bundle()) != string(next.Bundle()) || prev.SignerRoot().Fingerprint() != next.SignerRoot().Fingerprint()
	}
}

// secretUsers lists the identities whose translation references secrets.
func (c *machine) secretUsers() []translate.Identity {
	var ids []translate.Identity
	for id, p := range c.proxies {
		if len(p.secrets) > 0 && p.snap != nil && p.snap.closeErr == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// buildSecrets makes r's secret items from r.secrets, issuing or reusing
// the identity's leaf. It runs on the machine's caller's goroutine.
func (c *machine) buildSecrets(id translate.Identity, r *result, now time.Time) {
	r.items[typeSecret] = nil
	r.cert, r.certErr = nil, ""
	needLeaf := needsLeaf(r.secrets)
	c.useLeaf(id, needLeaf)
	if len(r.secrets) == 0 {
		return
	}
	if c.ca == nil {
		r.certErr = "no certificate authority: secrets " + secretNames(r.secrets) + " are not served"
		return
	}
	var leaf *ca.Leaf
	if needLeaf {
		var err error
		if leaf, err = c.leafFor(id, r.leafDNS, now); err != nil {
			r.certErr = fmt.Sprintf("issue certificate: %v", err)
		}
	}
	var bad []string
	bundle := c.ca.Bundle()
	for _, s := range r.secrets {
		sec := &tlsv3.Secret{Name: s.Name}
		switch s.Role {
		case translate.SecretCertificate:
			if leaf == nil {
				continue
			}
			sec.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(leaf.ChainPEM), PrivateKey: inline(leaf.KeyPEM)}}
		case translate.SecretValidation:
			sec.Type = &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(bundle)}}
		default:
			bad = append(bad, s.Name)
			continue
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(sec)
		if err != nil {
			r.certErr = fmt.Sprintf("marshal secret %s: %v", s.Name, err)
			continue
		}
		it := item{name: s.Name, sum: sha256.Sum256(b), key: s.Role == translate.SecretCertificate}
		if c.entries[it.sum] == nil {
			it.value = b
		}
		r.items[typeSecret] = append(r.items[typeSecret], it)
	}
	if len(bad) > 0 && r.certErr == "" {
		r.certErr = "secrets " + strings.Join(bad, ", ") + " are referenced both as a certificate and as a validation context; they are not served"
	}
	if leaf != nil {
		r.cert = &CertificateStatus{SPIFFEID: leaf.SPIFFEID, DNSNames: leaf.DNSNames, Serial: leaf.Serial.Text(16),
			NotAfter: leaf.NotAfter, RenewAt: leaf.RenewAt, Signer: leaf.Signer}
	}
}

// needsLeaf reports whether a secret is served as the proxy's own leaf.
func needsLeaf(refs []translate.SecretRef) bool {
	return slices.ContainsFunc(refs, func(s translate.SecretRef) bool { return s.Role == translate.SecretCertificate })
}

func secretNames(refs []translate.SecretRef) string {
	var n []string
	for _, s := range refs {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// leafFor returns the identity's leaf, issuing a new one when there is
// none, it is due for renewal, its signer is no longer the CA's, or its
// DNS names changed.
func (c *machine) leafFor(id translate.Identity, dns []string, now time.Time) (*ca.Leaf, error) {
	k := leafKeyOf(id)
	if c.leafValid(k, dns, now) {
		return c.leaves[k].leaf, nil
	}
	leaf, err := c.ca.Issue(c.entropy, now, c.certLifetime, c.leafRequest(id, dns))
	if err != nil {
		return nil, err
	}
	c.keepLeaf(id, leaf)
	return leaf, nil
}

func (c *machine) leafRequest(id translate.Identity, dns []string) ca.LeafRequest {
	return ca.LeafRequest{SPIFFEID: ca.SPIFFEID(c.trustDomain, id.Mesh, id.Kind, id.Name), DNSNames: dns}
}

// leafValid reports whether the cached leaf of k may still be served for
// dns at now.
func (c *machine) leafValid(k leafKey, dns []string, now time.Time) bool {
	ls := c.leaves[k]
	return ls != nil && ls.leaf != nil && now.Before(ls.leaf.RenewAt) && ls.leaf.Signer == c.ca.SignerRoot().Fingerprint() && slices.Equal(ls.leaf.DNSNames, dns)
}

// keepLeaf caches a new leaf of id's node.
func (c *machine) keepLeaf(id translate.Identity, leaf *ca.Leaf) {
	k := leafKeyOf(id)
	ls := c.leaves[k]
	if ls == nil {
		ls = &leafState{users: map[translate.Identity]struct{}{}}
		c.leaves[k] = ls
	}
	ls.leaf = leaf
	ls.users[id] = struct{}{}
	c.metrics.certIssued.Inc()
	c.log.Debug("certificate issued", "spiffe_id", leaf.SPIFFEID, "serial", leaf.Serial.Text(16), "not_after", leaf.NotAfter, "renew_at", leaf.RenewAt)
}

// preissue issues in parallel the leaves that buildSecrets would issue one
// by one for results (a restart reconnecting every proxy, a new signing
// root): a leaf costs a key generation and a signature. Failures are left
// to buildSecrets, which retries and reports them.
func (c *machine) preissue(tasks []task, results []result, now time.Time) {
	if c.ca == nil {
		return
	}
	type job struct {
		id   translate.Identity
		dns  []string
		leaf *ca.Leaf
	}
	seen := map[leafKey]bool{}
	var jobs []*job
	for i := range results {
		r := &results[i]
		if r.err != nil || r.closeErr != nil || !needsLeaf(r.secrets) {
			continue
		}
		k := leafKeyOf(tasks[i].id)
		if seen[k] || c.leafValid(k, r.leafDNS, now) {
			continue
		}
		seen[k] = true
		jobs = append(jobs, &job{id: tasks[i].id, dns: r.leafDNS})
	}
	if len(jobs) < 2 {
		return
	}
	authority := c.ca
	c.run(len(jobs), func(_, i int) {
		j := jobs[i]
		j.leaf, _ = authority.Issue(c.entropy, now, c.certLifetime, c.leafRequest(j.id, j.dns))
	})
	for _, j := range jobs {
		if j.leaf != nil {
			c.keepLeaf(j.id, j.leaf)
		}
	}
}

// useLeaf records whether id serves its node's leaf; a leaf that no
// identity serves any more is forgotten.
func (c *machine) useLeaf(id translate.Identity, uses bool) {
	k := leafKeyOf(id)
	ls := c.leaves[k]
	if uses {
		if ls == nil {
			ls = &leafState{users: map[translate.Identity]struct{}{}}
			c.leaves[k] = ls
		}
		ls.users[id] = struct{}{}
		return
	}
	if ls == nil {
		return
	}
	delete(ls.users, id)
	if len(ls.users) == 0 {
		delete(c.leaves, k)
	}
}

// RenewAt is when the earliest leaf is due for renewal (zero: none): the
// runner calls Renew then.
func (c *machine) RenewAt() time.Time {
	var next time.Time
	for _, ls := range c.leaves {
		if ls.leaf != nil && (next.IsZero() || ls.leaf.RenewAt.Before(next)) {
			next = ls.leaf.RenewAt
		}
	}
	return next
}

// Renew re-issues the leaves due at now and pushes the new secrets to the
// identities serving them.
func (c *machine) Renew(now time.Time) {
	var ids []translate.Identity
	for _, ls := range c.leaves {
		if ls.leaf == nil || now.Before(ls.leaf.RenewAt) {
			continue
		}
		for id := range ls.users {
			ids = append(ids, id)
		}
	}
	c.refreshSecrets(ids, now)
	// A leaf still due serves no identity that could be refreshed (its
	// resource was deleted, its streams are closing): forget it rather
	// than wake again at once; a later translation issues a new one.
	for k, ls := range c.leaves {
		if ls.leaf != nil && !now.Before(ls.leaf.RenewAt) {
			delete(c.leaves, k)
		}
	}
}

// refreshSecrets rebuilds the secrets alone of the identities.
func (c *machine) refreshSecrets(ids []translate.Identity, now time.Time) {
	tasks := make([]task, 0, len(ids))
	for _, id := range ids {
		// A proxy whose latest translation failed still serves its last
		// good one: its secrets are renewed all the same.
		if p := c.proxies[id]; p != nil && p.snap != nil && p.snap.closeErr == nil {
			tasks = append(tasks, task{id: id, secretsOnly: true})
		}
	}
	c.recompute(tasks, time.Time{}, now)
}

// sameResources is a result carrying an identity's current resources
// unchanged, for its secrets alone to be rebuilt.
func (c *machine) sameResources(id translate.Identity, w *worker) result {
	p := c.proxies[id]
	r := result{grpc: p.grpc, deps: p.deps, eps: p.eps, sources: p.sources, secrets: p.secrets, leafDNS: p.leafDNS, secretsOnly: true}
	g := index(p.grpc)
	for t := range numTypes {
		if t == typeSecret {
			continue
		}
		old := p.snap.types[t].entries
		r.items[t] = w.take(len(old))
		for i, e := range old {
			r.items[t][i] = item{name: e.name, sum: e.sum, facts: e.facts[g]}
		}
	}
	return r
}
