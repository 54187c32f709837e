package route

import (
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRequestMutationsOfEachPick: the request header mutations Pick
// gives with each cluster it picks, compiled with the routes, are the
// levels the goroutine path applies (the picked weighted cluster's, the
// route's, its virtual host's, the route configuration's), their names
// each once, sorted, in lower case too; none when no level mutates
// request headers (response mutations are not theirs).
func TestRequestMutationsOfEachPick(t *testing.T) {
	adds := func(keys ...string) []*corev3.HeaderValueOption {
		var out []*corev3.HeaderValueOption
		for _, k := range keys {
			out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: "v"}})
		}
		return out
	}
	plain := to("p", "/plain")
	plain.RequestHeadersToAdd = adds("x-r", "X-C")
	weighted := to("w", "/w")
	weighted.RequestHeadersToRemove = []string{"x-r"}
	weighted.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "a", Weight: wrapperspb.UInt32(1), RequestHeadersToAdd: adds("x-a"), RequestHeadersToRemove: []string{"X-Z"}},
			{Name: "b", Weight: wrapperspb.UInt32(1), ResponseHeadersToAdd: adds("x-b")}}}}
	rc := &routev3.RouteConfiguration{Name: "r", RequestHeadersToAdd: adds("x-c"), VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"}, RequestHeadersToRemove: []string{"x-v"}, Routes: []*routev3.Route{plain, weighted}}}}
	c, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	vh := c.VirtualHost("x")
	want := map[string]string{ // by cluster: the names, canonical and lower
		"p": "[X-C/x-c X-R/x-r X-V/x-v]",
		"a": "[X-A/x-a X-C/x-c X-R/x-r X-V/x-v X-Z/x-z]",
		"b": "[X-C/x-c X-R/x-r X-V/x-v]",
	}
	seen := map[string]bool{}
	for i := 0; len(seen) < len(want); i++ {
		if i == 1000 {
			t.Fatalf("clusters picked in 1000 draws: %v, want each of %v", seen, want)
		}
		rt := vh.Routes[i%2]
		name, ops, m := rt.Pick()
		seen[name] = true
		if m == nil {
			t.Fatalf("%s: no mutations", name)
		}
		if l := (Levels{ops, &rt.Headers, &vh.Headers, &c.Headers}); m.Levels != l {
			t.Errorf("%s: levels %v, want %v", name, m.Levels, l)
		}
		var names []string
		for j := range m.NumNames() {
			k, lower := m.Name(j)
			names = append(names, k+"/"+lower)
			if m.Index(k) != j || Named(m, lower) != j || Named(m, []byte(k)) != j {
				t.Errorf("%s: %s found at %d, %d, %d; want %d", name, k, m.Index(k), Named(m, lower), Named(m, []byte(k)), j)
			}
		}
		if got := fmt.Sprint(names); got != want[name] {
			t.Errorf("%s: names %s, want %s", name, got, want[name])
		}
		if Named(m, "x-other") != -1 || m.Index("x-c") != -1 {
			t.Errorf("%s: x-other named at %d, x-c (not canonical) indexed at %d; want -1, -1", name, Named(m, "x-other"), m.Index("x-c"))
		}
	}

	// Response mutations only, at every level: no request mutations.
	rc = &routev3.RouteConfiguration{Name: "r", ResponseHeadersToAdd: adds("x-c"), VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"}, ResponseHeadersToRemove: []string{"x-v"}, Routes: []*routev3.Route{to("p", "/")}}}}
	rc.VirtualHosts[0].Routes[0].ResponseHeadersToAdd = adds("x-r")
	if c, err = Compile(rc); err != nil {
		t.Fatal(err)
	}
	if _, _, m := c.VirtualHost("x").Routes[0].Pick(); m != nil {
		t.Errorf("response mutations only: request mutations %v, want none", m.Levels)
	}
	if m := (*RequestMutations)(nil); m.RequestLevels() != nil {
		t.Errorf("no mutations: levels %v, want nil", m.RequestLevels())
	}
}
