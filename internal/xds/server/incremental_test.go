package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestIncrementalEqualsFull: after every one of a few hundred random
// writes, each proxy's configuration, as the push loop maintains it
// through its dependency index, equals a translation from scratch of the
// store's state. A dependency the index misses shows as a proxy that kept
// an old version.
func TestIncrementalEqualsFull(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   TranslateFunc
		gen  func(*rand.Rand, *testing.T, store.Store)
		// endpointUpdates: some Cloud Map writes are followed by
		// rebuilding assignments alone, which needs the translator's
		// EndpointSources (fakeTranslate gives none).
		endpointUpdates bool
		// routeUpdates: some route writes are followed by assembling
		// route tables alone (hostsonly.go), which needs the real
		// translator's virtual hosts.
		routeUpdates bool
	}{
		{"fake", fakeTranslate, randomWrite, false, false},
		// The real translator's Deps, EndpointsOf and EndpointSources must
		// be complete too.
		{"translate", translate.TranslateWith, randomWrite, true, false},
		// Nodes drawing from two backend sets, so that a write often
		// affects several nodes with the same backends, which share
		// their egress (translate.Memo).
		{"translate/shared", translate.TranslateWith, randomWriteTwoBackendSets, true, false},
		// Route writes that change only what the routes do (weights,
		// match, priority, timeouts, retries) mixed with every other
		// write: the route tables assembled alone must be what a
		// translation gives.
		{"translate/hostsonly", translate.TranslateWith, randomWriteHostsOnly, true, true},
		// The same with gateway g0 and its routes written as often, and
		// services provided by routers more often than not: a gateway's
		// tables must follow the route writes as a translation does.
		{"translate/gateway", translate.TranslateWith, randomWriteGateway, true, true},
		// Egress tables whose contents are the same (a service whose
		// routes all have weight 0: a host without routes) in a
		// sidecar's and a proxyless client's, in two meshes, are rebuilt
		// differently when a weight comes back; then random writes.
		{"translate/flavours", translate.TranslateWith, scriptThen(flavourScript, randomWriteHostsOnly), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkIncremental(t, tc.tr, tc.gen, 300, tc.endpointUpdates, tc.routeUpdates)
		})
	}
}

func checkIncremental(t *testing.T, tr TranslateFunc, gen func(*rand.Rand, *testing.T, store.Store), writes int, endpointUpdates, routeUpdates bool) {
	t.Helper()
	ctx := context.Background()
	st := openStore(t)
	putNamespace(t, st)
	putMesh(t, st, "m")
	log := slog.New(slog.DiscardHandler)
	// A CA, so that nodes with TLS (randomWriteKind) are served secrets.
	if _, err := ca.Open(ctx, st, ca.Config{}, log); err != nil {
		t.Fatal(err)
	}
	newTestLoop := func() *testMachine {
		return newTestMachine(&Options{Store: st, LoadDiscovery: CloudMap, Translate: tr, Log: log}, nil)
	}
	l := newTestLoop()
	rev, err := l.resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := st.Watch(wctx, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	var ids []translate.Identity
	for i := range 5 {
		for _, pl := range []bool{false, true} {
			ids = append(ids, translate.Identity{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: fmt.Sprintf("n%d", i), Proxyless: pl})
		}
	}
	// A gateway (randomWriteHostsOnly writes one): its egress route
	// table holds the services' hosts, as a sidecar's does, but its own
	// gateway route table copies the targets' route timeouts and, for a
	// route that keeps the request's host, the targets' routes: a
	// route write that changes a timeout must reach it whole; one that
	// keeps every timeout may take the route-only path (hostsonly.go).
	ids = append(ids, translate.Identity{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualGateway, Name: "g0"})
	// Node n0 of mesh m2, which translate/flavours writes.
	for _, pl := range []bool{false, true} {
		ids = append(ids, translate.Identity{MeshOwner: owner, Mesh: "m2", Kind: appmesh.KindVirtualNode, Name: "n0", Proxyless: pl})
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	var seen [numTypes]int // most resources of each type one proxy had
	gateway := 0           // writes after which g0 served route tables
	for i := range writes {
		before := st.Revision()
		gen(rnd, t, st)
		if st.Revision() == before {
			continue // deleted what did not exist
		}
		// The changes of one write (a script's step may make several)
		// are applied as one batch, as the runner may batch them.
		var batch []store.Change
		for done := false; !done; {
			select {
			case c := <-changes:
				batch = append(batch, c)
				done = c.Revision == st.Revision()
			case <-time.After(wait):
				t.Fatal("no change from the store")
			}
		}
		l.apply(batch, time.Now())
		// Proxies connect as their nodes appear; a deleted node's
		// proxies are closed and reconnect (and are refused) later.
		for _, id := range ids {
			if p := l.proxies[id]; p != nil && p.snap != nil && p.snap.closeErr != nil {
				l.detach(id)
			}
			if l.proxies[id] == nil {
				l.attach(id) // NotFound while the node does not exist
			}
		}
		full := newTestLoop()
		if _, err := full.resync(ctx); err != nil {
			t.Fatal(err)
		}
		for id, p := range l.proxies {
			if err := full.attach(id); err != nil {
				t.Fatalf("write %d: %v is attached incrementally but a fresh attach says %v", i, id, err)
			}
			fp := full.proxies[id]
			if id.Kind == appmesh.KindVirtualGateway && fp.snap.closeErr == nil && len(fp.snap.types[typeRoute].entries) > 0 {
				gateway++
			}
			for typ := range numTypes {
				seen[typ] = max(seen[typ], len(fp.snap.types[typ].entries))
			}
			// Leaves are new keys wherever they are issued: the secrets
			// must name the same certificates, for the same names.
			if err := sameSecrets(p.snap.types[typeSecret].entries, fp.snap.types[typeSecret].entries); err != nil {
				t.Fatalf("write %d: sds of %s: %v", i, id.Name, err)
			}
			for typ := range numTypes {
				if typ == typeSecret {
					continue
				}
				if got, want := p.snap.types[typ].version, fp.snap.types[typ].version; got != want {
					t.Fatalf("write %d: %s of %s: incremental version %s, from scratch %s", i, typeName(typ), id.Name, got, want)
				}
				// Versions are built from content sums: the bytes served
				// must be those sums' bytes too.
				if err := sameBytes(p.snap.types[typ].entries, fp.snap.types[typ].entries); err != nil {
					t.Fatalf("write %d: %s of %s: %v", i, typeName(typ), id.Name, err)
				}
			}
			// Route tables are assembled from their hosts' encodings
			// (assemble.go), in both machines: the bytes served must be
			// what marshalling a translation of the proxy alone gives.
			if p.snap.closeErr == nil && p.err == "" {
				if err := routesAsMarshalled(tr, l.meshes[meshKey{owner, id.Mesh}].view, id, p.snap.types[typeRoute].entries); err != nil {
					t.Fatalf("write %d: rds of %s: %v", i, id.Name, err)
				}
			}
		}
	}
	// The writes must have built something worth comparing.
	for typ, n := range seen {
		if n == 0 && (typ != typeSecret || !strings.HasSuffix(t.Name(), "/fake")) {
			t.Fatalf("no proxy ever had a resource of type %s", typeName(typ))
		}
	}
	// translate.Translate says where endpoints go (EndpointSources), so
	// that some Cloud Map writes were followed without a translation;
	// fakeTranslate does not, so that every one was translated whole.
	updates := testutil.ToFloat64(l.metrics.epUpdates)
	if (updates > 0) != endpointUpdates {
		t.Fatalf("%v endpoint-only updates; want some: %t", updates, endpointUpdates)
	}
	routes := testutil.ToFloat64(l.metrics.routeUpdates)
	if routeUpdates && routes == 0 {
		t.Fatal("no route write was followed by assembling route tables alone")
	}
	if strings.HasSuffix(t.Name(), "/gateway") && gateway == 0 {
		t.Fatal("the gateway never served a route table: its writes did not exercise it")
	}
	if tr == nil || strings.HasSuffix(t.Name(), "/fake") {
		if routes > 0 {
			t.Fatalf("%v route-only updates with a translator that builds no egress host", routes)
		}
	}
	// The real translator shares the egress of nodes with equal backends
	// within a batch (translate.Memo); the versions compared above show
	// that what it shares is what a translation alone gives.
	shared := testutil.ToFloat64(l.metrics.sharedEgress)
	if strings.HasSuffix(t.Name(), "/shared") && shared == 0 {
		t.Fatal("no translation shared its egress with another node's")
	}
	t.Logf("most resources of one proxy, by type (cds eds lds rds): %v; %v endpoint-only updates; %v route-only updates; %v shared egresses; the gateway served route tables after %d writes", seen, updates, routes, shared, gateway)
}

// sameSecrets checks that two snapshots serve the same secrets: the
// same bundles, and leaves for the same SANs from the same signer.
func sameSecrets(got, want []*entry) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d secrets, from scratch %d", len(got), len(want))
	}
	for i := range got {
		var g, w tlsv3.Secret
		if err := got[i].any.UnmarshalTo(&g); err != nil {
			return err
		}
		if err := want[i].any.UnmarshalTo(&w); err != nil {
			return err
		}
		if g.GetName() != w.GetName() || got[i].key != want[i].key {
			return fmt.Errorf("secret %q (key %t), from scratch %q (key %t)", g.GetName(), got[i].key, w.GetName(), want[i].key)
		}
		if !got[i].key {
			if !proto.Equal(&g, &w) {
				return fmt.Errorf("bundle %q differs", g.GetName())
			}
			continue
		}
		gc, err := leafOf(&g)
		if err != nil {
			return err
		}
		wc, err := leafOf(&w)
		if err != nil {
			return err
		}
		if gc.URIs[0].String() != wc.URIs[0].String() || !slices.Equal(gc.DNSNames, wc.DNSNames) || !bytes.Equal(gc.RawIssuer, wc.RawIssuer) {
			return fmt.Errorf("leaf %q for %v %v, from scratch %v %v", g.GetName(), gc.URIs, gc.DNSNames, wc.URIs, wc.DNSNames)
		}
	}
	return nil
}

// leafOf parses the certificate of a leaf secret.
func leafOf(s *tlsv3.Secret) (*x509.Certificate, error) {
	b, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if b == nil {
		return nil, fmt.Errorf("secret %q holds no certificate", s.GetName())
	}
	return x509.ParseCertificate(b.Bytes)
}

// routesAsMarshalled checks that entries serve, byte for byte, the
// deterministic encoding of each route table tr gives for id alone.
func routesAsMarshalled(tr TranslateFunc, v *translate.View, id translate.Identity, entries []*entry) error {
	res, err := tr(v, id, nil)
	if err != nil {
		return err
	}
	if len(res.Routes) != len(entries) {
		return fmt.Errorf("%d route tables served, %d translated", len(entries), len(res.Routes))
	}
	for i, rc := range res.Routes {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
		if err != nil {
			return err
		}
		if e := entries[i]; e.name != rc.GetName() || !bytes.Equal(e.any.GetValue(), want) {
			return fmt.Errorf("route table %q: served bytes are not its encoding", rc.GetName())
		}
	}
	return nil
}

// sameBytes checks that two snapshots' entries of one type serve the same
// resources, byte for byte, none of them empty.
func sameBytes(got, want []*entry) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d resources, from scratch %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i].any.GetValue(), want[i].any.GetValue()
		if len(g) == 0 {
			return fmt.Errorf("resource %q is served with no bytes", got[i].name)
		}
		if !bytes.Equal(g, w) {
			return fmt.Errorf("resource %q: served bytes differ from a translation from scratch", got[i].name)
		}
	}
	return nil
}

// TestBatchMovesInternedResource: one transaction swaps two nodes'
// backends, so one batch re-translates both and each takes over resources
// the other held. Installing the first must not drop an interned resource
// the second's result refers to (results carry no bytes for resources
// already interned): every served resource keeps its bytes.
func TestBatchMovesInternedResource(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	putNamespace(t, st)
	putMesh(t, st, "m")
	putNode(t, st, "m", "p1")
	putNode(t, st, "m", "p2")
	putService(t, st, "m", "s1", "p1")
	putService(t, st, "m", "s2", "p2")
	putNode(t, st, "m", "a", "s1")
	putNode(t, st, "m", "b", "s2")
	log := slog.New(slog.DiscardHandler)
	l := newTestMachine(&Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.TranslateWith, Log: log}, nil)
	rev, err := l.resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := st.Watch(ctx, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	ids := []translate.Identity{
		{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "a"},
		{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "b"},
	}
	for _, id := range ids {
		if err := l.attach(id); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 6 {
		from, to := "s1", "s2"
		if round%2 == 1 {
			from, to = to, from
		}
		a, err := json.Marshal(nodeData("m", "a", to))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(nodeData("m", "b", from))
		if err != nil {
			t.Fatal(err)
		}
		rev, err := st.Update(ctx, func(tx store.Tx) error {
			if err := tx.Put(ref("m", appmesh.KindVirtualNode, "", "a").Key(), a); err != nil {
				return err
			}
			return tx.Put(ref("m", appmesh.KindVirtualNode, "", "b").Key(), b)
		})
		if err != nil {
			t.Fatal(err)
		}
		var batch []store.Change
		for len(batch) == 0 || batch[len(batch)-1].Revision < rev {
			select {
			case c := <-changes:
				batch = append(batch, c)
			case <-time.After(wait):
				t.Fatal("no change from the store")
			}
		}
		l.apply(batch, time.Now())
		full := newTestMachine(&Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.TranslateWith, Log: log}, nil)
		if _, err := full.resync(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if err := full.attach(id); err != nil {
				t.Fatal(err)
			}
			for typ := range numTypes {
				if err := sameBytes(l.proxies[id].snap.types[typ].entries, full.proxies[id].snap.types[typ].entries); err != nil {
					t.Fatalf("round %d: %s of %s: %v", round, typeName(typ), id.Name, err)
				}
			}
		}
	}
}

// TestIncrementalEqualsFullPoisoned: TestIncrementalEqualsFull with each
// worker's items poisoned, not zeroed, at every batch's end (worker.done):
// a result or item list read or kept after its batch would hand proxies
// the poisoned items, and the configurations would differ.
func TestIncrementalEqualsFullPoisoned(t *testing.T) {
	poisonItems = true
	defer func() { poisonItems = false }()
	TestIncrementalEqualsFull(t)
}
