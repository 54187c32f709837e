package server

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestAssembledRouteIsMarshal: a route table holding a name and virtual
// hosts is served as the bytes deterministic marshalling gives, whatever
// the name and the number of hosts (past the assembly's stack buffers
// too); its sum is the same for the same content in different messages
// and differs for any change; a table with any other field is not
// assembled.
func TestAssembledRouteIsMarshal(t *testing.T) {
	host := func(name string, weight uint32) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: []string{name, name + ":8080"}, Routes: []*routev3.Route{{
			Name:  "r",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
				WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "a", Weight: wrapperspb.UInt32(weight)}, {Name: "b", Weight: wrapperspb.UInt32(100 - weight)}}}}}},
		}}}
	}
	hosts := func(n int, weight uint32) []*routev3.VirtualHost {
		var out []*routev3.VirtualHost
		for i := range n {
			out = append(out, host(fmt.Sprintf("svc-%d.local", i), weight))
		}
		return out
	}
	tables := map[string]*routev3.RouteConfiguration{
		"empty":        {},
		"name only":    {Name: "rds_egress_http_8080"},
		"hosts only":   {VirtualHosts: hosts(2, 50)},
		"one host":     {Name: "rds_egress_http_8080", VirtualHosts: hosts(1, 50)},
		"three hosts":  {Name: "rds_egress_http_8080", VirtualHosts: hosts(3, 50)},
		"weights":      {Name: "rds_egress_http_8080", VirtualHosts: hosts(3, 51)},
		"other name":   {Name: "rds_egress_http_8081", VirtualHosts: hosts(3, 50)},
		"many hosts":   {Name: "rds_egress_http_8080", VirtualHosts: hosts(40, 50)},
		"long name":    {Name: strings.Repeat("n", 600), VirtualHosts: hosts(3, 50)},
		"empty host":   {Name: "rds_egress_http_8080", VirtualHosts: []*routev3.VirtualHost{{}}},
		"hosts moved":  {Name: "rds_egress_http_8080", VirtualHosts: append(hosts(3, 50)[1:], hosts(1, 50)...)},
		"same content": {Name: "rds_egress_http_8080", VirtualHosts: hosts(3, 50)},
	}
	sh := &shared{}
	sums := map[[sha256.Size]byte]string{}
	for name, rc := range tables {
		if !assemblable(rc) {
			t.Fatalf("%s: a name and hosts, not assembled", name)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
		if err != nil {
			t.Fatal(err)
		}
		sum, got, err := sh.assembleRoute(rc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: assembled\n%x\nmarshalled\n%x", name, got, want)
		}
		if again, none, _ := sh.assembleRoute(rc, map[[sha256.Size]byte]*entry{sum: {}}); again != sum || none != nil {
			t.Fatalf("%s: interned already, yet assembled again or summed differently", name)
		}
		if other, ok := sums[sum]; ok && !(strings.Contains(name+other, "same content") && strings.Contains(name+other, "three hosts")) {
			t.Fatalf("%s and %s differ and have the same sum", name, other)
		}
		sums[sum] = name
	}
	if len(sums) != len(tables)-1 {
		t.Fatalf("%d sums for %d tables of %d contents", len(sums), len(tables), len(tables)-1)
	}
	for name, rc := range map[string]*routev3.RouteConfiguration{
		"validate clusters": {Name: "x", VirtualHosts: hosts(1, 50), ValidateClusters: wrapperspb.Bool(false)},
		"headers":           {Name: "x", InternalOnlyHeaders: []string{"x-internal"}},
		"nil host":          {Name: "x", VirtualHosts: []*routev3.VirtualHost{nil}},
	} {
		if assemblable(rc) {
			t.Errorf("%s: assembled, though the table holds more than a name and hosts", name)
		}
	}
	unknown := &routev3.RouteConfiguration{Name: "x"}
	unknown.ProtoReflect().SetUnknown([]byte{0xf8, 0x7f, 0x01}) // field 2047, varint 1
	if assemblable(unknown) {
		t.Error("a table with unknown fields is assembled")
	}
}

// BenchmarkRouteTable is one identity's share of a batch for its own
// route table of five shared virtual hosts: marshalled and hashed whole
// (marshal), or assembled from the hosts' encodings, which the batch made
// once (assemble).
func BenchmarkRouteTable(b *testing.B) {
	var hosts []*routev3.VirtualHost
	for i := range 5 {
		name := fmt.Sprintf("svc-%d.bench.local", i)
		hosts = append(hosts, &routev3.VirtualHost{Name: name, Domains: []string{name, name + ":8080"}, Routes: []*routev3.Route{{
			Name:  "split",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
				WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: fmt.Sprintf("cds_egress_bench_tgt-%d-a_http_8080", i), Weight: wrapperspb.UInt32(30)},
					{Name: fmt.Sprintf("cds_egress_bench_tgt-%d-b_http_8080", i), Weight: wrapperspb.UInt32(70)}}}}}},
		}}})
	}
	rc := &routev3.RouteConfiguration{Name: "rds_egress_http_8080", VirtualHosts: hosts}
	b.Run("marshal", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			v, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf[:0], rc)
			if err != nil {
				b.Fatal(err)
			}
			buf = v
			sum := sha256.Sum256(v)
			_ = bytes.Clone(v)
			_ = sum
		}
	})
	b.Run("assemble", func(b *testing.B) {
		sh := &shared{}
		for b.Loop() {
			if _, _, err := sh.assembleRoute(rc, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
