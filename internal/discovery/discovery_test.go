package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

func openStore(t *testing.T) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func ptr[T any](v T) *T { return &v }

func put(t *testing.T, st store.Store, key string, v any) store.Revision {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, b) })
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func del(t *testing.T, st store.Store, key string) store.Revision {
	t.Helper()
	rev, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Delete(key) })
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func nsRecord(id, name string, typ cloudmap.NamespaceType) cloudmap.NamespaceRecord {
	return cloudmap.NamespaceRecord{Namespace: cloudmap.Namespace{Id: ptr(id), Name: ptr(name), Type: typ}}
}

func svcRecord(id, nsID, name string, records ...cloudmap.RecordType) cloudmap.ServiceRecord {
	r := cloudmap.ServiceRecord{Service: cloudmap.Service{Id: ptr(id), NamespaceId: ptr(nsID), Name: ptr(name)}}
	if len(records) > 0 {
		dc := &cloudmap.DnsConfig{RoutingPolicy: cloudmap.RoutingPolicyMultivalue}
		for _, t := range records {
			dc.DnsRecords = append(dc.DnsRecords, cloudmap.DnsRecord{Type: t, TTL: ptr(int64(300))})
		}
		r.Service.DnsConfig = dc
	}
	return r
}

func instRecord(id string, health cloudmap.HealthStatus, attrs map[string]string) cloudmap.InstanceRecord {
	return cloudmap.InstanceRecord{Instance: cloudmap.Instance{Id: ptr(id), Attributes: attrs}, Health: health}
}

func load(t *testing.T, st store.Store) *discovery.Index {
	t.Helper()
	var ix *discovery.Index
	rev, err := st.View(context.Background(), func(tx store.Tx) (err error) {
		ix, err = discovery.Load(tx, 0, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ix.WithRevision(rev)
}

// follower applies the store's changes to an index, as the xDS server does.
type follower struct {
	t       *testing.T
	ix      *discovery.Index
	changes <-chan store.Change
	skipped []string // the keys Apply reported skipped, in order
	// orphaned are those of skipped reported with ErrOrphaned.
	orphaned []string
}

func (f *follower) skip(key string, err error) {
	if err == nil {
		f.t.Errorf("%s skipped with a nil error", key)
	}
	f.skipped = append(f.skipped, key)
	if errors.Is(err, discovery.ErrOrphaned) {
		f.orphaned = append(f.orphaned, key)
	}
}

func follow(t *testing.T, st store.Store) *follower {
	t.Helper()
	ix := load(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := st.Watch(ctx, "", ix.Revision()) // every key, to see Apply skip foreign ones
	if err != nil {
		t.Fatal(err)
	}
	return &follower{t: t, ix: ix, changes: ch}
}

// next applies the next change and returns the services it reports.
func (f *follower) next() []discovery.ServiceRef {
	f.t.Helper()
	c, ok := <-f.changes
	if !ok {
		f.t.Fatal("watch closed")
	}
	next, changed := f.ix.Apply(c, f.skip)
	if next != f.ix && next.Revision() != c.Revision {
		f.t.Fatalf("Apply: revision %d, want %d", next.Revision(), c.Revision)
	}
	f.ix = next
	return changed
}

// dump is everything an index answers, for comparing two indexes.
func dump(ix *discovery.Index, refs []discovery.ServiceRef) string {
	out := fmt.Sprintf("zones=%v\n", ix.Zones())
	for _, r := range refs {
		out += fmt.Sprintf("%v has=%v eps=%+v", r, ix.HasService(r.Namespace, r.Service), ix.Endpoints(r.Namespace, r.Service, nil))
		ref, dc, ok := ix.DNSService(r.Service + "." + r.Namespace)
		out += fmt.Sprintf(" dns=%v %v %+v\n", ok, ref, dc)
	}
	return out
}

func TestEndpoints(t *testing.T) {
	st := openStore(t)
	f := follow(t, st)

	put(t, st, cloudmap.NamespaceKey("ns-1"), nsRecord("ns-1", "colors.local", cloudmap.NamespaceTypeDnsPrivate))
	if got := f.next(); len(got) != 0 {
		t.Errorf("namespace created: changed %v, want none", got)
	}
	put(t, st, cloudmap.ServiceKey("srv-red"), svcRecord("srv-red", "ns-1", "red", cloudmap.RecordTypeA))
	red := discovery.ServiceRef{Namespace: "colors.local", Service: "red"}
	if got := f.next(); !reflect.DeepEqual(got, []discovery.ServiceRef{red}) {
		t.Errorf("service created: changed %v, want [%v]", got, red)
	}
	put(t, st, "appmesh/mesh/x/y", map[string]string{})
	before := f.ix
	if got := f.next(); got != nil || f.ix != before {
		t.Errorf("foreign key: Apply returned a new index or changes %v", got)
	}

	instances := []struct {
		id     string
		health cloudmap.HealthStatus
		attrs  map[string]string
	}{
		{"b", cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "10.0.0.2", cloudmap.AttrPort: "8080", "stage": "beta"}},
		{"a", cloudmap.HealthStatusUnknown, map[string]string{cloudmap.AttrIPv4: "10.0.0.1", cloudmap.AttrIPv6: "fd00::1", "stage": "prod"}},
		{"c", cloudmap.HealthStatusUnhealthy, map[string]string{cloudmap.AttrIPv4: "10.0.0.3", "stage": "prod"}},
		{"d", cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "10.0.0.4", cloudmap.AttrPort: "bad", "stage": "prod"}},
	}
	for _, in := range instances {
		put(t, st, cloudmap.InstanceKey("srv-red", in.id), instRecord(in.id, in.health, in.attrs))
		if got := f.next(); !reflect.DeepEqual(got, []discovery.ServiceRef{red}) {
			t.Errorf("instance %s: changed %v, want [%v]", in.id, got, red)
		}
	}

	tests := []struct {
		name   string
		filter map[string]string
		want   []discovery.Endpoint
	}{
		{"all healthy, sorted", nil, []discovery.Endpoint{
			{InstanceID: "a", IPv4: "10.0.0.1", IPv6: "fd00::1", Attributes: instances[1].attrs},
			{InstanceID: "b", IPv4: "10.0.0.2", Port: 8080, Attributes: instances[0].attrs},
			{InstanceID: "d", IPv4: "10.0.0.4", Attributes: instances[3].attrs},
		}},
		{"attribute filter", map[string]string{"stage": "prod"}, []discovery.Endpoint{
			{InstanceID: "a", IPv4: "10.0.0.1", IPv6: "fd00::1", Attributes: instances[1].attrs},
			{InstanceID: "d", IPv4: "10.0.0.4", Attributes: instances[3].attrs},
		}},
		{"filter on two keys", map[string]string{"stage": "beta", cloudmap.AttrPort: "8080"}, []discovery.Endpoint{
			{InstanceID: "b", IPv4: "10.0.0.2", Port: 8080, Attributes: instances[0].attrs},
		}},
		{"filter matching none", map[string]string{"stage": "gamma"}, []discovery.Endpoint{}},
		{"filter on a missing key", map[string]string{"zone": ""}, []discovery.Endpoint{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.ix.Endpoints("colors.local", "red", tt.filter)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Endpoints(%v) =\n%+v\nwant\n%+v", tt.filter, got, tt.want)
			}
		})
	}
	if got := f.ix.Endpoints("colors.local", "blue", nil); got != nil {
		t.Errorf("unknown service: %v, want nil", got)
	}

	// The old index is untouched by later changes.
	old := f.ix
	del(t, st, cloudmap.InstanceKey("srv-red", "a"))
	f.next()
	if n := len(old.Endpoints("colors.local", "red", nil)); n != 3 {
		t.Errorf("old index changed: %d endpoints, want 3", n)
	}
	if n := len(f.ix.Endpoints("colors.local", "red", nil)); n != 2 {
		t.Errorf("after deregistering a: %d endpoints, want 2", n)
	}

	zone, ok := f.ix.Zone("RED.Colors.Local.")
	if !ok || zone.Name != "colors.local" || zone.SOATTL != discovery.DefaultSOATTL {
		t.Errorf("Zone(RED.Colors.Local.) = %+v, %v", zone, ok)
	}
	if _, ok := f.ix.Zone("example.com"); ok {
		t.Error("Zone(example.com) found")
	}
	ref, dc, ok := f.ix.DNSService("Red.colors.local.")
	if !ok || ref != red || dc.RoutingPolicy != cloudmap.RoutingPolicyMultivalue || !reflect.DeepEqual(dc.Records, []discovery.DNSRecord{{Type: cloudmap.RecordTypeA, TTL: 300}}) {
		t.Errorf("DNSService = %v %+v %v", ref, dc, ok)
	}
	if got, want := dump(f.ix, []discovery.ServiceRef{red}), dump(load(t, st), []discovery.ServiceRef{red}); got != want {
		t.Errorf("incremental index differs from a fresh load:\n%s\nwant\n%s", got, want)
	}
}

// TestApplyEqualsLoad checks the incremental index against a full reload
// after every one of many random writes: services and instances written
// and deleted, and namespace and service records that stop decoding, come
// back, or (by hand) change a namespace's name or type, with children
// written under a parent that is out.
func TestApplyEqualsLoad(t *testing.T) {
	st := openStore(t)
	f := follow(t, st)
	rng := rand.New(rand.NewPCG(1, 2))

	type ns struct {
		name string
		typ  cloudmap.NamespaceType
	}
	// Each namespace's versions; the first is written at the start.
	namespaces := map[string][]ns{
		"ns-a": {{"a.local", cloudmap.NamespaceTypeDnsPrivate}, {"a.local", cloudmap.NamespaceTypeHttp}, {"a2.local", cloudmap.NamespaceTypeDnsPrivate}},
		"ns-b": {{"b.example", cloudmap.NamespaceTypeHttp}, {"b2.example", cloudmap.NamespaceTypeDnsPublic}},
	}
	nsIDs := []string{"ns-a", "ns-b"}
	type svc struct{ id, nsID, name string }
	services := []svc{{"srv-1", "ns-a", "one"}, {"srv-2", "ns-a", "two"}, {"srv-3", "ns-b", "three"}}
	var refs []discovery.ServiceRef
	for _, n := range []string{"a.local", "a2.local", "b.example", "b2.example"} {
		for _, s := range []string{"one", "two", "three", "missing"} {
			refs = append(refs, discovery.ServiceRef{Namespace: n, Service: s})
		}
	}
	for _, id := range nsIDs {
		v := namespaces[id][0]
		put(t, st, cloudmap.NamespaceKey(id), nsRecord(id, v.name, v.typ))
		f.next()
	}
	raw := func(key, value string) {
		if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, []byte(value)) }); err != nil {
			t.Fatal(err)
		}
	}
	live := map[string]bool{}
	registered := map[string]bool{} // instance keys
	for i := range 600 {
		s := services[rng.IntN(len(services))]
		switch op := rng.IntN(14); {
		case op == 0 && live[s.id]:
			// Delete the service and its instances in one transaction.
			var keys []string
			for k := range registered {
				if strings.HasPrefix(k, cloudmap.InstancesPrefix(s.id)) {
					keys = append(keys, k)
					delete(registered, k)
				}
			}
			_, err := st.Update(context.Background(), func(tx store.Tx) error {
				for _, k := range append(keys, cloudmap.ServiceKey(s.id)) {
					if err := tx.Delete(k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			live[s.id] = false
		case op == 1:
			raw(cloudmap.ServiceKey(s.id), []string{`{"Service":`, `{"Service":{"Id":5}}`}[rng.IntN(2)])
			live[s.id] = true // the key is there, not decoding: deleted as any
		case op == 2:
			id := nsIDs[rng.IntN(len(nsIDs))]
			if rng.IntN(3) == 0 {
				raw(cloudmap.NamespaceKey(id), `{"Namespace":`)
			} else {
				vs := namespaces[id]
				v := vs[rng.IntN(len(vs))]
				put(t, st, cloudmap.NamespaceKey(id), nsRecord(id, v.name, v.typ))
			}
		case !live[s.id] || op == 3:
			put(t, st, cloudmap.ServiceKey(s.id), svcRecord(s.id, s.nsID, s.name, cloudmap.RecordTypeA))
			live[s.id] = true
		case op < 6:
			key := cloudmap.InstanceKey(s.id, fmt.Sprint("i-", rng.IntN(6)))
			if !registered[key] {
				continue // a transaction that writes nothing has no change to watch
			}
			del(t, st, key)
			delete(registered, key)
		default:
			id := fmt.Sprint("i-", rng.IntN(6))
			health := []cloudmap.HealthStatus{cloudmap.HealthStatusHealthy, cloudmap.HealthStatusUnhealthy, cloudmap.HealthStatusUnknown}[rng.IntN(3)]
			attrs := map[string]string{cloudmap.AttrIPv4: fmt.Sprintf("10.0.%d.%d", rng.IntN(3), rng.IntN(250)), "v": fmt.Sprint(rng.IntN(2))}
			put(t, st, cloudmap.InstanceKey(s.id, id), instRecord(id, health, attrs))
			registered[cloudmap.InstanceKey(s.id, id)] = true
		}
		before := f.ix
		changed := f.next()
		fresh := load(t, st)
		if got, want := dump(f.ix, refs), dump(fresh, refs); got != want {
			t.Fatalf("step %d: incremental index differs from a fresh load:\n%s\nwant\n%s", i, got, want)
		}
		// Every service whose answer changed is reported.
		for _, r := range refs {
			if dumpRef(before, r) != dumpRef(f.ix, r) && !contains(changed, r) {
				t.Fatalf("step %d: %v changed but was not reported in %v", i, r, changed)
			}
		}
	}
}

func contains(refs []discovery.ServiceRef, r discovery.ServiceRef) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}

// dumpRef is what an index answers for r alone (dump without the zones).
func dumpRef(ix *discovery.Index, r discovery.ServiceRef) string {
	_, out, _ := strings.Cut(dump(ix, []discovery.ServiceRef{r}), "\n")
	return out
}
