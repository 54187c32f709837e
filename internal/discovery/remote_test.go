package discovery_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
)

// TestRemoteRecords: a service with a remote record is resolved from it
// (healthy instances, attribute filter) instead of weft's own registry;
// deleting the record falls back to the registry; Load and Apply agree.
func TestRemoteRecords(t *testing.T) {
	st := openStore(t)
	put(t, st, cloudmap.NamespaceKey("ns-1"), nsRecord("ns-1", "apps", cloudmap.NamespaceTypeHttp))
	put(t, st, cloudmap.ServiceKey("srv-b"), svcRecord("srv-b", "ns-1", "b"))
	put(t, st, cloudmap.InstanceKey("srv-b", "local"), instRecord("local", cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: "192.0.2.1"}))
	f := follow(t, st)
	b := discovery.ServiceRef{Namespace: "apps", Service: "b"}
	ips := func(ix *discovery.Index, ref discovery.ServiceRef, filter map[string]string) []string {
		var out []string
		for _, e := range ix.Endpoints(ref.Namespace, ref.Service, filter) {
			out = append(out, e.IPv4)
		}
		return out
	}
	if got := ips(f.ix, b, nil); !reflect.DeepEqual(got, []string{"192.0.2.1"}) {
		t.Fatalf("local endpoints %v", got)
	}

	rec := discovery.RemoteRecord{Remote: "aws", Revision: 3, Instances: []discovery.RemoteInstance{
		{ID: "r2", Attributes: map[string]string{cloudmap.AttrIPv4: "10.0.0.2", "stage": "green"}, HealthStatus: "HEALTHY"},
		{ID: "r1", Attributes: map[string]string{cloudmap.AttrIPv4: "10.0.0.1", "stage": "blue"}, HealthStatus: "UNKNOWN"},
		{ID: "r3", Attributes: map[string]string{cloudmap.AttrIPv4: "10.0.0.3", "stage": "blue"}, HealthStatus: "UNHEALTHY"},
	}}
	put(t, st, discovery.RemoteKey(b), rec)
	if got := f.next(); !reflect.DeepEqual(got, []discovery.ServiceRef{b}) {
		t.Fatalf("remote record put: changed %v", got)
	}
	if got := ips(f.ix, b, nil); !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Fatalf("remote endpoints %v", got)
	}
	if got := ips(f.ix, b, map[string]string{"stage": "blue"}); !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Fatalf("filtered remote endpoints %v", got)
	}
	// A remote service weft's registry does not know resolves too.
	c := discovery.ServiceRef{Namespace: "elsewhere", Service: "c"}
	put(t, st, discovery.RemoteKey(c), discovery.RemoteRecord{Remote: "aws", Revision: -1})
	f.next()
	if got := f.ix.Endpoints(c.Namespace, c.Service, nil); got == nil || len(got) != 0 {
		t.Fatalf("empty remote service: %v, want an empty, non-nil list", got)
	}
	if l := load(t, st); !reflect.DeepEqual(ips(l, b, nil), ips(f.ix, b, nil)) {
		t.Fatalf("Load %v, Apply %v", ips(l, b, nil), ips(f.ix, b, nil))
	}
	// The record goes: weft's own registry answers again.
	del(t, st, discovery.RemoteKey(b))
	if got := f.next(); !reflect.DeepEqual(got, []discovery.ServiceRef{b}) {
		t.Fatalf("remote record deleted: changed %v", got)
	}
	if got := ips(f.ix, b, nil); !reflect.DeepEqual(got, []string{"192.0.2.1"}) {
		t.Fatalf("endpoints after the remote record went: %v", got)
	}
	// Remote keys are no Cloud Map records of weft's API.
	if _, ok := cloudmap.ParseKey(discovery.RemoteKey(b)); ok {
		t.Fatal("cloudmap.ParseKey accepts a remote key")
	}
	if r, ok := discovery.ParseRemoteKey(discovery.RemoteKey(discovery.ServiceRef{Namespace: "a/b", Service: "c d"})); !ok || r.Namespace != "a/b" || r.Service != "c d" {
		t.Fatalf("ParseRemoteKey round trip: %v %v", r, ok)
	}
}

// TestCheckRemoteRecord: the record the follower writes passes the check
// a restore makes, and so does one the index reads although the
// follower writes none such; another spelling of its key, or a value
// the index cannot read, does not.
func TestCheckRemoteRecord(t *testing.T) {
	ref := discovery.ServiceRef{Namespace: "apps", Service: "b/c"}
	good, err := json.Marshal(discovery.RemoteRecord{Remote: "aws", Revision: 3, Instances: []discovery.RemoteInstance{{ID: "i1", Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := discovery.CheckRemoteRecord(discovery.RemoteKey(ref), good); err != nil {
		t.Fatalf("the follower's record: %v", err)
	}
	for _, readable := range []string{
		`{"remote":"aws","instances":[{"id":"i1","port":80}]}`, // a member the type lacks
		`{"instances":[]}`,
	} {
		if err := discovery.CheckRemoteRecord(discovery.RemoteKey(ref), []byte(readable)); err != nil {
			t.Errorf("%s: %v", readable, err)
		}
	}
	for _, tc := range []struct{ key, value, want string }{
		{discovery.RemotePrefix + "apps/b%2fc", string(good), "not the key"},
		{discovery.RemotePrefix + "apps", string(good), "not the key"},
		{discovery.RemoteKey(ref), `{"remote":"aws","instances":{}}`, "cannot unmarshal object"},
		{discovery.RemoteKey(ref), `{"remote":"aws"} {}`, "after top-level value"},
		{discovery.RemoteKey(ref), `{"remote":`, "not a remote service record"},
	} {
		if err := discovery.CheckRemoteRecord(tc.key, []byte(tc.value)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s = %s: %v; want an error saying %q", tc.key, tc.value, err, tc.want)
		}
	}
}
