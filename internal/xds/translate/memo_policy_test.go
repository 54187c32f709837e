package translate

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Client policies the random meshes draw from, as App Mesh JSON: several
// nodes draw the same one (so clusters are shared between callers), and
// they differ in everything the egress cluster reads (enforcement, ports,
// file, SDS and ACM trust, client certificates, names to match).
var memoPolicies = []string{
	``,
	`{"enforce":true,"validation":{"trust":{"file":{"certificateChain":"/certs/ca.pem"}}}}`,
	`{"validation":{"trust":{"file":{"certificateChain":"/certs/other-ca.pem"}}}}`,
	`{"enforce":false,"validation":{"trust":{"file":{"certificateChain":"/certs/ca.pem"}}}}`,
	`{"ports":[8080],"validation":{"trust":{"sds":{"secretName":"bundle"}}}}`,
	`{"ports":[80,9000],"certificate":{"sds":{"secretName":"leaf"}},"validation":{"trust":{"sds":{"secretName":"bundle"}},"subjectAlternativeNames":{"match":{"exact":["spiffe://m/n1"]}}}}`,
	`{"certificate":{"file":{"certificateChain":"/certs/leaf.pem","privateKey":"/certs/leaf.key"}},"validation":{"trust":{"acm":{"certificateAuthorityArns":["arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca"]}}}}`,
}

// TestMemoSameAsTranslatePolicies is TestMemoSameAsTranslate on random
// meshes whose callers have their own client policies (per backend and by
// default, for nodes and gateways), whose targets serve TLS, check health
// and eject outliers, for proxies with and without an SDS agent: with one
// Memo, in a random order, twice (the second pass concurrently), every
// translation gives what Translate gives. Every result is rendered again
// at the end, so a translation that modified a message shared with an
// earlier one fails the test.
func TestMemoSameAsTranslatePolicies(t *testing.T) {
	n := 100
	if testing.Short() {
		n = 30
	}
	shared, clusters := 0, 0
	for seed := range uint64(n) {
		rng := rand.New(rand.NewPCG(seed, 11))
		v := randomMesh(rng)
		addPolicies(t, rng, v)
		addTwins(t, v)
		var ids []Identity
		for _, id := range proxies(v, defaultAccount) {
			ids = append(ids, id)
			if id.Kind == appmesh.KindVirtualNode && !id.Proxyless {
				id.SDSSocket = true
				ids = append(ids, id)
			}
		}
		want := make([][]byte, len(ids))
		for i, id := range ids {
			r, err := Translate(v, id)
			if err != nil {
				t.Fatalf("seed %d %s: %v", seed, goldenName(id), err)
			}
			want[i] = render(t, id, r)
		}
		m := NewMemo()
		got := make([]*Resources, 2*len(ids))
		for _, i := range rng.Perm(len(ids)) {
			r, err := TranslateWith(v, ids[i], m)
			if err != nil {
				t.Fatalf("seed %d %s: %v", seed, goldenName(ids[i]), err)
			}
			got[i] = r
		}
		// The second pass as the xDS server runs a batch: workers sharing
		// the Memo.
		errs := make([]error, len(ids))
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			// ends when the worker has translated its share of ids.
			go func() {
				defer wg.Done()
				for i := w; i < len(ids); i += 3 {
					got[len(ids)+i], errs[i] = TranslateWith(v, ids[i], m)
				}
			}()
		}
		wg.Wait()
		for i, r := range got {
			id := ids[i%len(ids)]
			if err := errs[i%len(ids)]; err != nil {
				t.Fatalf("seed %d %s: %v", seed, goldenName(id), err)
			}
			if g := render(t, id, r); !bytes.Equal(g, want[i%len(ids)]) {
				t.Fatalf("seed %d %s (sdsSocket %t), pass %d: with a Memo differs from Translate:\n%s",
					seed, goldenName(id), id.SDSSocket, i/len(ids), firstDiff(want[i%len(ids)], g))
			}
		}
		shared += m.Shared()
		clusters += m.SharedClusters()
	}
	if shared == 0 || clusters == 0 {
		t.Fatalf("%d egresses and %d clusters shared: the twins and common policies should have", shared, clusters)
	}
	t.Logf("%d egresses, %d clusters shared", shared, clusters)
}

// addPolicies gives the nodes of a random mesh client policies (per
// backend and by default) drawn from memoPolicies, the gateway backend
// defaults, and the nodes' listeners TLS, health checks and outlier
// detection.
func addPolicies(t *testing.T, rng *rand.Rand, v *View) {
	t.Helper()
	policy := func() *appmesh.ClientPolicy {
		s := pick(rng, memoPolicies)
		if s == "" {
			return nil
		}
		var p appmesh.ClientPolicy
		if err := json.Unmarshal([]byte(`{"tls":`+s+`}`), &p); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	for _, n := range sortedKeys(v.VirtualNodes) {
		spec := v.VirtualNodes[n].Spec
		for i := range spec.Backends {
			if vs := spec.Backends[i].VirtualService; vs != nil && rng.IntN(2) == 0 {
				vs.ClientPolicy = policy()
			}
		}
		if p := policy(); p != nil && rng.IntN(2) == 0 {
			spec.BackendDefaults = &appmesh.BackendDefaults{ClientPolicy: p}
		}
		for i := range spec.Listeners {
			l := &spec.Listeners[i]
			switch rng.IntN(3) {
			case 0:
				l.Tls = &appmesh.ListenerTls{Mode: pick(rng, []appmesh.ListenerTlsMode{appmesh.ListenerTlsModeStrict, appmesh.ListenerTlsModePermissive}),
					Certificate: &appmesh.ListenerTlsCertificate{File: &appmesh.ListenerTlsFileCertificate{CertificateChain: ptr("/certs/" + n + ".pem"), PrivateKey: ptr("/certs/" + n + ".key")}}}
			case 1:
				l.HealthCheck = &appmesh.HealthCheckPolicy{Protocol: appmesh.PortProtocolHttp, Path: ptr("/ping"), Port: ptr(int64(9901)),
					HealthyThreshold: ptr(int64(2)), UnhealthyThreshold: ptr(int64(3)), IntervalMillis: ptr(int64(5000)), TimeoutMillis: ptr(int64(2000))}
				l.OutlierDetection = &appmesh.OutlierDetection{MaxServerErrors: ptr(int64(5)), MaxEjectionPercent: ptr(int64(50)),
					Interval: &appmesh.Duration{Unit: appmesh.DurationUnitS, Value: ptr(int64(10))}, BaseEjectionDuration: &appmesh.Duration{Unit: appmesh.DurationUnitS, Value: ptr(int64(30))}}
			}
		}
	}
	if g := v.VirtualGateways["g"]; g != nil {
		if s := pick(rng, memoPolicies); s != "" {
			var p appmesh.VirtualGatewayClientPolicy
			if err := json.Unmarshal([]byte(`{"tls":`+s+`}`), &p); err != nil {
				t.Fatal(err)
			}
			g.Spec.BackendDefaults = &appmesh.VirtualGatewayBackendDefaults{ClientPolicy: &p}
		}
	}
}
