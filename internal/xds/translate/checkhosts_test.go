package translate

import (
	"math/rand/v2"
	"reflect"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCheckAssembledAsCheckResource: CheckAssembled gives
// CheckResource's facts and verdict (and, on failure, its error) for
// every route table of every proxy of the golden cases and of random
// meshes, as Envoy's and as gRPC's, one HostChecks shared by all the
// tables of a mesh; and for those tables spoiled: a host twice, a
// domain in two hosts, a route weighing nothing, a field besides the
// name and hosts.
func TestCheckAssembledAsCheckResource(t *testing.T) {
	var views []*View
	var owners []string
	for _, dir := range caseDirs(t) {
		v, owner := replay(t, dir)
		views, owners = append(views, v), append(owners, owner)
	}
	for seed := range uint64(40) {
		views, owners = append(views, randomMesh(rand.New(rand.NewPCG(seed, 13)))), append(owners, defaultAccount)
	}
	compared, failed := 0, 0
	for i, v := range views {
		m := NewMemo()
		hc := NewHostChecks()
		for _, id := range proxies(v, owners[i]) {
			r, err := TranslateWith(v, id, m)
			if err != nil {
				continue
			}
			for _, rc := range r.Routes {
				for _, tc := range spoiled(rc) {
					for _, grpc := range []bool{false, true} {
						wf, werr := CheckResource(tc, grpc)
						gf, gerr := hc.CheckAssembled(tc, grpc)
						if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
							t.Fatalf("%s: %s (grpc %t): CheckAssembled error %v, CheckResource error %v", goldenName(id), tc.GetName(), grpc, gerr, werr)
						}
						if !reflect.DeepEqual(wf, gf) {
							t.Fatalf("%s: %s (grpc %t): CheckAssembled facts %+v, CheckResource facts %+v", goldenName(id), tc.GetName(), grpc, gf, wf)
						}
						compared++
						if werr != nil {
							failed++
						}
					}
				}
			}
		}
	}
	if compared < 1000 || failed < 100 {
		t.Fatalf("%d tables compared, %d refused: not varied enough", compared, failed)
	}
	t.Logf("%d tables compared, %d refused", compared, failed)
}

// spoiled is rc and copies of it each broken one way (none for a table
// without hosts). The hosts are shared with rc, as in a batch, except
// the one broken.
func spoiled(rc *routev3.RouteConfiguration) []*routev3.RouteConfiguration {
	out := []*routev3.RouteConfiguration{rc}
	hosts := rc.GetVirtualHosts()
	if len(hosts) == 0 {
		return out
	}
	with := func(hs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: rc.GetName(), VirtualHosts: hs}
	}
	out = append(out, with(append(cloneHosts(hosts), hosts[0])...))
	other := proto.Clone(hosts[0]).(*routev3.VirtualHost)
	other.Name += "-other"
	out = append(out, with(append(cloneHosts(hosts), other)...))
	if len(hosts[0].GetRoutes()) > 0 {
		zero := proto.Clone(hosts[0]).(*routev3.VirtualHost)
		if wc := zero.GetRoutes()[0].GetRoute().GetWeightedClusters(); wc != nil {
			for _, c := range wc.GetClusters() {
				c.Weight = wrapperspb.UInt32(0)
			}
			out = append(out, with(append([]*routev3.VirtualHost{zero}, hosts[1:]...)...))
		}
	}
	extra := with(hosts...)
	extra.ValidateClusters = wrapperspb.Bool(true)
	return append(out, extra)
}

func cloneHosts(hs []*routev3.VirtualHost) []*routev3.VirtualHost {
	return append([]*routev3.VirtualHost(nil), hs...)
}
