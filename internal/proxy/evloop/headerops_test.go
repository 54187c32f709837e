package evloop

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// The names random header mutations and the requests they apply to are
// made of, in several cases: few enough that they meet often.
var mutNames = []string{"x-a", "X-A", "x-B", "X-b", "x-c", "X-C-D", "x-c-d", "Accept"}

// randMutations are random request header mutations (none to a few
// removals and adds of every append action, values empty or not, kept
// or not, the legacy append too) of one level.
func randMutations(r *rand.Rand) (adds []*corev3.HeaderValueOption, removes []string) {
	for range r.IntN(3) {
		removes = append(removes, pick(r, mutNames))
	}
	actions := []corev3.HeaderValueOption_HeaderAppendAction{corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		corev3.HeaderValueOption_ADD_IF_ABSENT, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS}
	for range r.IntN(5) {
		o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: pick(r, mutNames), Value: pick(r, []string{"", "1", "2", "v"})},
			AppendAction: pick(r, actions), KeepEmptyValue: r.IntN(2) == 0}
		if o.AppendAction == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD && r.IntN(4) == 0 {
			o.Append = wrapperspb.Bool(r.IntN(2) == 0)
		}
		adds = append(adds, o)
	}
	return adds, removes
}

// randMutationsConfig is a route configuration of one route to weighted
// clusters, random request header mutations at each of its levels.
func randMutationsConfig(r *rand.Rand) *routev3.RouteConfiguration {
	rt := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}
	rt.RequestHeadersToAdd, rt.RequestHeadersToRemove = randMutations(r)
	var clusters []*routev3.WeightedCluster_ClusterWeight
	for i := range 1 + r.IntN(3) {
		c := &routev3.WeightedCluster_ClusterWeight{Name: fmt.Sprint("c", i), Weight: wrapperspb.UInt32(1)}
		c.RequestHeadersToAdd, c.RequestHeadersToRemove = randMutations(r)
		clusters = append(clusters, c)
	}
	rt.Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
		WeightedClusters: &routev3.WeightedCluster{Clusters: clusters}}}}
	vh := &routev3.VirtualHost{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{rt}}
	vh.RequestHeadersToAdd, vh.RequestHeadersToRemove = randMutations(r)
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{vh}}
	rc.RequestHeadersToAdd, rc.RequestHeadersToRemove = randMutations(r)
	return rc
}

// mutatedAsHeader is what the loops wrote before they kept the fields
// their own way (and the goroutine path's rule as it is): the fields m's
// levels name, by canonical name in an http.Header, mutated
// (route.Levels.Request), then written by sorted name. kept are the
// fields not named, which go upstream as they are.
func mutatedAsHeader(m *proxyroute.RequestMutations, fields [][2]string) (kept, out []string) {
	h := http.Header{}
	for _, f := range fields {
		named := false
		for _, ops := range m.Levels {
			if ops == nil {
				continue
			}
			for _, k := range ops.RequestRemove {
				named = named || proxyroute.EqualFoldASCII(f[0], k)
			}
			for _, a := range ops.RequestAdd {
				named = named || proxyroute.EqualFoldASCII(f[0], a.Key)
			}
		}
		if !named {
			kept = append(kept, f[0]+": "+f[1])
			continue
		}
		k := http.CanonicalHeaderKey(f[0])
		h[k] = append(h[k], f[1])
	}
	m.Levels.Request(h)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[k] {
			out = append(out, k+": "+v)
		}
	}
	return kept, out
}

// TestHeaderMutationAsHeader: the loops' header mutation, kept in the
// loop's reused fields, sends upstream what the goroutine path's rule on
// an http.Header gives (optimised equals obvious), over random mutations
// at every level and random requests, fields taken from a head and from
// HTTP/2 fields, one mutation after another in the same fields; each
// field's name in lower case is its canonical one's.
func TestHeaderMutationAsHeader(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 30))
	var mut headerMutation
	mutated := 0
	for i := range 3000 {
		c, err := proxyroute.Compile(randMutationsConfig(r))
		if err != nil {
			t.Fatal(err)
		}
		_, _, m := c.VirtualHost("x").Routes[0].Pick()
		if m == nil {
			continue
		}
		var fields [][2]string
		for range r.IntN(6) {
			fields = append(fields, [2]string{pick(r, append(mutNames, "X-Other")), pick(r, []string{"", "a", "b"})})
		}
		wantKept, want := mutatedAsHeader(m, fields)
		for _, head := range []bool{true, false} {
			var kept, got []string
			mut.reset(m)
			for _, f := range fields {
				taken := false
				if head {
					taken = mut.take([]byte(f[0]), []byte(f[1]))
				} else {
					taken = mut.takeString(f[0], f[1])
				}
				if !taken {
					kept = append(kept, f[0]+": "+f[1])
				}
			}
			mut.result(func(name, lower string, f *mutField) {
				if lower != strings.ToLower(name) {
					t.Errorf("%s in lower case: %s", name, lower)
				}
				if s := string(f.appendValue(nil)); s != f.String() {
					t.Errorf("%s: value %q appended, %q as a string", name, s, f.String())
				}
				got = append(got, name+": "+f.String())
			})
			if fmt.Sprintf("%q %q", kept, got) != fmt.Sprintf("%q %q", wantKept, want) {
				t.Fatalf("case %d, from a head %v: levels %+v\nrequest %q\nkept %q, sent %q\nwant %q, %q",
					i, head, levelsString(m.Levels), fields, kept, got, wantKept, want)
			}
			mutated += len(got)
		}
	}
	if mutated < 3000 {
		t.Errorf("%d mutated fields sent in 3000 cases: the cases hardly mutate", mutated)
	}
}

func levelsString(l proxyroute.Levels) string {
	var b strings.Builder
	for _, ops := range l {
		if ops == nil {
			b.WriteString("[nil] ")
			continue
		}
		fmt.Fprintf(&b, "[remove %q add %+v] ", ops.RequestRemove, ops.RequestAdd)
	}
	return b.String()
}

// TestHeaderMutationAllocatesNothing: the loops apply a route's request
// header mutations without allocating once their fields have grown: the
// header App Mesh's gateway routes add (BenchmarkHTTPOneHopHeaderAdd's)
// and a removal, to a request that has a field of each, read from a head
// and from HTTP/2 fields; and OwnHeader, which the loops ask of each
// mutation's name on each request.
func TestHeaderMutationAllocatesNothing(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}},
		RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-app-mesh-virtual-service", Value: "svc.local"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
		RequestHeadersToRemove: []string{"x-gone"}}}}}}
	c, err := proxyroute.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	_, _, m := c.VirtualHost("x").Routes[0].Pick()
	fields := [][2]string{{"Host", "x"}, {"X-App-Mesh-Virtual-Service", "client"}, {"x-gone", "1"}, {"Accept", "*/*"}}
	var heads [][2][]byte // as a head's bytes
	for _, f := range fields {
		heads = append(heads, [2][]byte{[]byte(f[0]), []byte(f[1])})
	}
	var mut headerMutation
	out := make([]byte, 0, 256)
	run := func(fromHead bool) {
		out = out[:0]
		mut.reset(m)
		for i := range fields {
			if fromHead {
				mut.take(heads[i][0], heads[i][1])
			} else {
				mut.takeString(fields[i][0], fields[i][1])
			}
		}
		mut.result(func(name, lower string, f *mutField) {
			out = append(out, lower...)
			out = append(out, ": "...)
			out = f.appendValue(out)
		})
		if string(out) != "x-app-mesh-virtual-service: svc.local" {
			t.Fatalf("sent %q, want x-app-mesh-virtual-service: svc.local", out)
		}
	}
	for _, fromHead := range []bool{true, false} {
		run(fromHead) // the fields grow once
		if n := testing.AllocsPerRun(100, func() { run(fromHead) }); n > 0 {
			t.Errorf("from a head %v: %v allocations per request, want 0", fromHead, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ownSink = OwnHeader("X-Envoy-Original-Path") && !OwnHeader("X-App") }); n > 0 {
		t.Errorf("OwnHeader: %v allocations, want 0", n)
	}
	if !ownSink {
		t.Errorf("OwnHeader: X-Envoy-Original-Path not the loops', or X-App the loops'")
	}
}

var ownSink bool

// TestHeaderMutationKeepsNothingWritten: once the loops have written a
// request's mutated fields, the loop's reused fields hold none of its
// head (a slice of a buffer the loop may trim) nor its values: the loop
// may wait long for its next request, and a field kept would keep the
// buffer alive until then.
func TestHeaderMutationKeepsNothingWritten(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}},
		RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "added"},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}}}}}}}
	c, err := proxyroute.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	_, _, m := c.VirtualHost("x").Routes[0].Pick()
	var mut headerMutation
	for _, fromHead := range []bool{true, false} {
		mut.reset(m)
		for _, v := range []string{"1", "2", "3"} {
			if fromHead {
				mut.take([]byte("X-A"), []byte(v))
			} else {
				mut.takeString("x-a", v)
			}
		}
		sent := 0
		mut.result(func(string, string, *mutField) { sent++ })
		if sent != 4 {
			t.Fatalf("from a head %v: %d fields sent, want 4", fromHead, sent)
		}
		for i, f := range mut.fields[:cap(mut.fields)] {
			if f.head != nil || f.value != "" || f.inHead || f.name != 0 {
				t.Errorf("from a head %v: field %d kept after the write: %+v", fromHead, i, f)
			}
		}
		if len(mut.fields) != 0 {
			t.Errorf("from a head %v: %d fields after the write, want none", fromHead, len(mut.fields))
		}
	}
}
