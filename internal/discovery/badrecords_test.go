package discovery_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
)

// TestLoadSkipsBadRecords: records Load cannot use (not JSON, of the
// wrong type, naming a namespace or service that is not there) are left
// out and reported, those naming a missing parent with ErrOrphaned and
// only those; every other record is served, as after Apply.
func TestLoadSkipsBadRecords(t *testing.T) {
	st := openStore(t)
	put(t, st, cloudmap.NamespaceKey("ns-1"), nsRecord("ns-1", "apps", cloudmap.NamespaceTypeHttp))
	put(t, st, cloudmap.ServiceKey("srv-a"), svcRecord("srv-a", "ns-1", "a"))
	put(t, st, cloudmap.InstanceKey("srv-a", "i1"), instRecord("i1", cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "192.0.2.1"}))
	bad := map[string]string{
		cloudmap.NamespaceKey("ns-2"):          `{"Namespace":`,
		cloudmap.ServiceKey("srv-b"):           `{"Service":{"Id":"srv-b","Name":"b","NamespaceId":"ns-nowhere"}}`,
		cloudmap.ServiceKey("srv-c"):           `{"Service":{"Id":5}}`,
		cloudmap.InstanceKey("srv-a", "i2"):    `{"Instance":`,
		cloudmap.InstanceKey("srv-none", "i3"): `{"Instance":{"Id":"i3"},"Health":"HEALTHY"}`,
		cloudmap.InstanceKey("srv-b", "i4"):    `{"Instance":{"Id":"i4"},"Health":"HEALTHY"}`,
		discovery.RemotePrefix + "apps/d":      `{"remote":`,
	}
	_, err := st.Update(context.Background(), func(tx store.Tx) error {
		for k, v := range bad {
			if err := tx.Put(k, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	skipped := map[string]bool{}
	var orphaned []string
	why := map[string]string{}
	_, err = st.View(context.Background(), func(tx store.Tx) error {
		ix, err := discovery.Load(tx, 0, func(key string, err error) {
			skipped[key] = err != nil
			if errors.Is(err, discovery.ErrOrphaned) {
				orphaned = append(orphaned, key)
				why[key] = err.Error()
			}
		})
		if err != nil {
			return err
		}
		if eps := ix.Endpoints("apps", "a", nil); len(eps) != 1 || eps[0].IPv4 != "192.0.2.1" {
			t.Errorf("endpoints of the good service: %+v", eps)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Load failed on bad records: %v", err)
	}
	for k := range bad {
		if !skipped[k] {
			t.Errorf("%s was not reported skipped", k)
		}
	}
	if len(skipped) != len(bad) {
		t.Errorf("skipped %v, want the %d bad records", skipped, len(bad))
	}
	slices.Sort(orphaned)
	if want := []string{cloudmap.InstanceKey("srv-b", "i4"), cloudmap.InstanceKey("srv-none", "i3"), cloudmap.ServiceKey("srv-b")}; !slices.Equal(orphaned, want) {
		t.Errorf("reported orphaned %q, want %q", orphaned, want)
	}
	// Each names what is missing: an instance of a stored service whose
	// namespace is missing is not of an unknown service.
	for key, want := range map[string]string{
		cloudmap.InstanceKey("srv-none", "i3"): `unknown service "srv-none"`,
		cloudmap.InstanceKey("srv-b", "i4"):    `unknown namespace "ns-nowhere"`,
		cloudmap.ServiceKey("srv-b"):           `unknown namespace "ns-nowhere"`,
	} {
		if !strings.Contains(why[key], want) {
			t.Errorf("%s reported %q, want it to say %s", key, why[key], want)
		}
	}
}

// TestApplySkipsBadRecords: a record put that Load would leave out is
// reported by Apply and leaves the index what a fresh Load reads, also
// when it replaces a good version of the record (which must not go on
// being served: a restart would drop it).
func TestApplySkipsBadRecords(t *testing.T) {
	st := openStore(t)
	f := follow(t, st)
	put(t, st, cloudmap.NamespaceKey("ns-1"), nsRecord("ns-1", "apps", cloudmap.NamespaceTypeDnsPrivate))
	f.next()
	put(t, st, cloudmap.ServiceKey("srv-a"), svcRecord("srv-a", "ns-1", "a", cloudmap.RecordTypeA))
	f.next()
	put(t, st, cloudmap.ServiceKey("srv-b"), svcRecord("srv-b", "ns-1", "b", cloudmap.RecordTypeA))
	f.next()
	for _, i := range []string{"i1", "i2"} {
		put(t, st, cloudmap.InstanceKey("srv-a", i), instRecord(i, cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "192.0.2.1"}))
		f.next()
	}
	put(t, st, discovery.RemotePrefix+"apps/r", discovery.RemoteRecord{Remote: "x", Instances: []discovery.RemoteInstance{{ID: "i9", Attributes: map[string]string{cloudmap.AttrIPv4: "192.0.2.9"}}}})
	f.next()
	if len(f.skipped) != 0 {
		t.Fatalf("good records reported skipped: %v", f.skipped)
	}
	refs := []discovery.ServiceRef{{"apps", "a"}, {"apps", "b"}, {"apps", "r"}, {"apps", "c"}}
	cases := []struct {
		name, key, value string
		orphaned         bool // reported with ErrOrphaned
	}{
		{"new namespace not JSON", cloudmap.NamespaceKey("ns-2"), `{"Namespace":`, false},
		{"new service of no namespace", cloudmap.ServiceKey("srv-c"), `{"Service":{"Id":"srv-c","Name":"c","NamespaceId":"ns-nowhere"}}`, true},
		{"instance of no service", cloudmap.InstanceKey("srv-none", "i3"), `{"Instance":{"Id":"i3"},"Health":"HEALTHY"}`, true},
		{"instance replaced by one not JSON", cloudmap.InstanceKey("srv-a", "i2"), `{"Instance":`, false},
		{"instance replaced by a member of the wrong type", cloudmap.InstanceKey("srv-a", "i1"), `{"Instance":{"Id":5}}`, false},
		{"service replaced by one not JSON", cloudmap.ServiceKey("srv-b"), `{"Service":`, false},
		{"remote replaced by one not JSON", discovery.RemotePrefix + "apps/r", `{"remote":`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.t, f.skipped, f.orphaned = t, nil, nil
			_, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(tc.key, []byte(tc.value)) })
			if err != nil {
				t.Fatal(err)
			}
			f.next()
			if len(f.skipped) != 1 || f.skipped[0] != tc.key {
				t.Errorf("Apply reported %v skipped, want [%s]", f.skipped, tc.key)
			}
			if orphaned := len(f.orphaned) > 0; orphaned != tc.orphaned {
				t.Errorf("Apply reported it orphaned: %v, want %v", orphaned, tc.orphaned)
			}
			if got, want := dump(f.ix, refs), dump(load(t, st), refs); got != want {
				t.Errorf("incremental index differs from a fresh load:\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// compactedOnce is a store whose first Watch answers ErrCompacted, as
// etcd does when the revision a load read is compacted before its watch
// opens: Follow then loads again.
type compactedOnce struct {
	store.Store
	watched atomic.Bool
}

func (s *compactedOnce) Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error) {
	if !s.watched.Swap(true) {
		return nil, store.ErrCompacted
	}
	return s.Store.Watch(ctx, prefix, from)
}

// TestApplyBadThenFixed: a namespace or service put that does not decode
// leaves out its children too, as a fresh Load does, and its fixed
// version serves them again, as a fresh Load does: a service its
// instances, a namespace its services and theirs. Also for children
// written or removed while their parent was out, and for a namespace
// whose fixed version has another name or type. The index is compared
// with a fresh Load after every change, and every service whose answer
// changed must be reported.
func TestApplyBadThenFixed(t *testing.T) {
	st := openStore(t)
	f := follow(t, st)
	refs := []discovery.ServiceRef{{"apps", "a"}, {"apps", "b"}, {"apps", "c"}, {"apps2", "a"}, {"apps2", "b"}, {"apps2", "c"}}
	inst := func(id string) cloudmap.InstanceRecord {
		return instRecord(id, cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "192.0.2.1"})
	}
	raw := func(key, value string) func() {
		return func() {
			if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, []byte(value)) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	good := func(key string, v any) func() { return func() { put(t, st, key, v) } }
	gone := func(key string) func() { return func() { del(t, st, key) } }
	ns := cloudmap.NamespaceKey("ns-1")
	srvA, srvB, srvC := cloudmap.ServiceKey("srv-a"), cloudmap.ServiceKey("srv-b"), cloudmap.ServiceKey("srv-c")
	steps := []struct {
		name  string
		write func()
		eps   map[discovery.ServiceRef]int // healthy endpoints wanted; absent: no service
	}{
		{"namespace", good(ns, nsRecord("ns-1", "apps", cloudmap.NamespaceTypeDnsPrivate)), nil},
		{"service a", good(srvA, svcRecord("srv-a", "ns-1", "a", cloudmap.RecordTypeA)), map[discovery.ServiceRef]int{{"apps", "a"}: 0}},
		{"service b", good(srvB, svcRecord("srv-b", "ns-1", "b")), map[discovery.ServiceRef]int{{"apps", "a"}: 0, {"apps", "b"}: 0}},
		{"a's i1", good(cloudmap.InstanceKey("srv-a", "i1"), inst("i1")), map[discovery.ServiceRef]int{{"apps", "a"}: 1, {"apps", "b"}: 0}},
		{"a's i2", good(cloudmap.InstanceKey("srv-a", "i2"), inst("i2")), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "b"}: 0}},
		{"b's i1", good(cloudmap.InstanceKey("srv-b", "i1"), inst("i1")), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "b"}: 1}},

		{"service a bad", raw(srvA, `{"Service":`), map[discovery.ServiceRef]int{{"apps", "b"}: 1}},
		{"service a fixed", good(srvA, svcRecord("srv-a", "ns-1", "a", cloudmap.RecordTypeA)), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "b"}: 1}},
		{"service a bad again", raw(srvA, `{"Service":{"Id":5}}`), map[discovery.ServiceRef]int{{"apps", "b"}: 1}},
		{"a's i3 while a is out", good(cloudmap.InstanceKey("srv-a", "i3"), inst("i3")), map[discovery.ServiceRef]int{{"apps", "b"}: 1}},
		{"a's i1 gone while a is out", gone(cloudmap.InstanceKey("srv-a", "i1")), map[discovery.ServiceRef]int{{"apps", "b"}: 1}},
		{"service a fixed again", good(srvA, svcRecord("srv-a", "ns-1", "a", cloudmap.RecordTypeA)), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "b"}: 1}},

		{"namespace bad", raw(ns, `{"Namespace":`), nil},
		{"service c while the namespace is out", good(srvC, svcRecord("srv-c", "ns-1", "c")), nil},
		{"c's i1 while the namespace is out", good(cloudmap.InstanceKey("srv-c", "i1"), inst("i1")), nil},
		{"service b gone while the namespace is out", gone(srvB), nil},
		{"namespace fixed", good(ns, nsRecord("ns-1", "apps", cloudmap.NamespaceTypeDnsPrivate)), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "c"}: 1}},
		{"service b back, with its instance", good(srvB, svcRecord("srv-b", "ns-1", "b")), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "b"}: 1, {"apps", "c"}: 1}},

		{"namespace renamed by hand", good(ns, nsRecord("ns-1", "apps2", cloudmap.NamespaceTypeDnsPrivate)), map[discovery.ServiceRef]int{{"apps2", "a"}: 2, {"apps2", "b"}: 1, {"apps2", "c"}: 1}},
		{"namespace made HTTP by hand", good(ns, nsRecord("ns-1", "apps2", cloudmap.NamespaceTypeHttp)), map[discovery.ServiceRef]int{{"apps2", "a"}: 2, {"apps2", "b"}: 1, {"apps2", "c"}: 1}},
		{"namespace gone", gone(ns), nil},
		{"namespace back", good(ns, nsRecord("ns-1", "apps", cloudmap.NamespaceTypeDnsPrivate)), map[discovery.ServiceRef]int{{"apps", "a"}: 2, {"apps", "b"}: 1, {"apps", "c"}: 1}},
	}
	for i, step := range steps {
		before := f.ix
		step.write()
		changed := f.next()
		if got, want := dump(f.ix, refs), dump(load(t, st), refs); got != want {
			t.Fatalf("step %d (%s): incremental index differs from a fresh load:\n%s\nwant\n%s", i, step.name, got, want)
		}
		for _, r := range refs {
			n, ok := step.eps[r]
			if got := f.ix.HasService(r.Namespace, r.Service); got != ok {
				t.Errorf("step %d (%s): HasService(%v) = %v, want %v", i, step.name, r, got, ok)
			}
			if got := len(f.ix.Endpoints(r.Namespace, r.Service, nil)); got != n {
				t.Errorf("step %d (%s): %v has %d endpoints, want %d", i, step.name, r, got, n)
			}
			if dumpRef(before, r) != dumpRef(f.ix, r) && !contains(changed, r) {
				t.Errorf("step %d (%s): %v changed but was not reported in %v", i, step.name, r, changed)
			}
		}
	}
	if _, _, ok := f.ix.DNSService("a.apps"); !ok {
		t.Error("a.apps has no DNS records after its namespace came back a DNS namespace")
	}
}

// TestFollowReportsSkips: Follow (the DNS server's follower) passes skip
// the records its load leaves out, once even when it loads twice (the
// first snapshot compacted before its watch opened), and those a later
// change puts that it leaves out, and publishes the index without the
// latter.
func TestFollowReportsSkips(t *testing.T) {
	st := openStore(t)
	put(t, st, cloudmap.NamespaceKey("ns-1"), nsRecord("ns-1", "apps", cloudmap.NamespaceTypeHttp))
	put(t, st, cloudmap.ServiceKey("srv-a"), svcRecord("srv-a", "ns-1", "a"))
	put(t, st, cloudmap.InstanceKey("srv-a", "i1"), instRecord("i1", cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "192.0.2.1"}))
	if _, err := st.Update(context.Background(), func(tx store.Tx) error {
		return tx.Put(cloudmap.InstanceKey("srv-a", "i0"), []byte(`{"Instance":`))
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	skips := make(chan string, 10)
	updates := make(chan discovery.Update, 10)
	done := make(chan error, 1)
	go func() { // ends with cancel below
		done <- discovery.Follow(ctx, &compactedOnce{Store: st}, func(key string, _ error) { skips <- key }, func(u discovery.Update) { updates <- u })
	}()
	defer func() {
		cancel()
		<-done
	}()
	next := func(what string) discovery.Update {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(10 * time.Second):
			t.Fatalf("no update %s", what)
		}
		return discovery.Update{}
	}
	next("at load")
	if got := <-skips; got != cloudmap.InstanceKey("srv-a", "i0") {
		t.Fatalf("load skipped %s", got)
	}
	select {
	case got := <-skips:
		t.Fatalf("load skipped %s again", got)
	default:
	}
	if _, err := st.Update(context.Background(), func(tx store.Tx) error {
		return tx.Put(cloudmap.InstanceKey("srv-a", "i1"), []byte(`{"Instance":{"Id":5}}`))
	}); err != nil {
		t.Fatal(err)
	}
	u := next("after i1 stopped decoding")
	select {
	case got := <-skips:
		if got != cloudmap.InstanceKey("srv-a", "i1") {
			t.Fatalf("the change skipped %s", got)
		}
	default:
		t.Fatal("the change's bad record was not reported")
	}
	if eps := u.Index.Endpoints("apps", "a", nil); len(eps) != 0 {
		t.Errorf("endpoints of a after its instance stopped decoding: %+v, want none", eps)
	}
}
