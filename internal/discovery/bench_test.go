package discovery_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
)

// BenchmarkApply measures one instance change applied to an index of 100,
// 1,000 and 10,000 services of 10 instances each. Apply copies one shard
// of the services and the changed service's instances, so its cost should
// hardly grow with the registry.
func BenchmarkApply(b *testing.B) {
	for _, services := range []int{100, 1000, 10000} {
		// Built once per size: b.Run calls its function once per b.N tried.
		ix := discovery.Empty()
		rev := store.Revision(0)
		put := func(key string, v any) store.Change {
			val, _ := json.Marshal(v)
			rev++
			return store.Change{Revision: rev, Events: []store.Event{{Type: store.EventPut, KV: store.KV{Key: key, Value: val}}}}
		}
		ix, _ = ix.Apply(put(cloudmap.NamespaceKey("ns-1"), nsRecord("ns-1", "bench.local", cloudmap.NamespaceTypeDnsPrivate)), nil)
		for s := range services {
			id := fmt.Sprint("srv-", s)
			ix, _ = ix.Apply(put(cloudmap.ServiceKey(id), svcRecord(id, "ns-1", fmt.Sprint("svc", s), cloudmap.RecordTypeA)), nil)
			for i := range 10 {
				ix, _ = ix.Apply(put(cloudmap.InstanceKey(id, fmt.Sprint(i)), instRecord(fmt.Sprint(i), cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: fmt.Sprintf("10.0.%d.%d", s%250, i)})), nil)
			}
		}
		changes := make([]store.Change, 100)
		for i := range changes {
			changes[i] = put(cloudmap.InstanceKey("srv-7", "3"), instRecord("3", cloudmap.HealthStatusHealthy, map[string]string{cloudmap.AttrIPv4: fmt.Sprintf("10.1.0.%d", i)}))
		}
		b.Run(fmt.Sprint(services, "-services"), func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				next, changed := ix.Apply(changes[i%len(changes)], nil)
				if len(changed) != 1 {
					b.Fatal(changed)
				}
				_ = next
			}
		})
	}
}
