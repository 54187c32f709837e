package server

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// routerStore is colorStore with blue.local provided by router r (HTTP on
// 8080), whose routes are written by the test.
func routerStore(t *testing.T) store.Store {
	st := colorStore(t)
	putRaw(t, st, ref("m", appmesh.KindVirtualRouter, "", "r"),
		`{"meshName":"m","virtualRouterName":"r","spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`)
	putRaw(t, st, ref("m", appmesh.KindVirtualService, "", "blue.local"),
		`{"meshName":"m","virtualServiceName":"blue.local","spec":{"provider":{"virtualRouter":{"virtualRouterName":"r"}}}}`)
	return st
}

// routeTo writes route name of router r sending what match matches to
// node blue.
func routeTo(t *testing.T, st store.Store, name, match string) {
	t.Helper()
	putRaw(t, st, ref("m", appmesh.KindRoute, "r", name), fmt.Sprintf(
		`{"meshName":"m","virtualRouterName":"r","routeName":%q,"spec":{"httpRoute":{"match":%s,"action":{"weightedTargets":[{"virtualNode":"blue","weight":1}]}}}}`, name, match))
}

// routeMatches lists the path matches of an RDS response's routes, as
// prefix:/x, path:/x or regex:x, and fails the test if one of its regexes
// does not compile: Envoy would NACK the whole response (RE2 and Go's
// regexp take the same syntax).
func routeMatches(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		rc, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			t.Fatalf("%T in an RDS response", m)
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				mt := rt.GetMatch()
				var regexes []string
				switch {
				case mt.GetSafeRegex() != nil:
					out = append(out, "regex:"+mt.GetSafeRegex().GetRegex())
					regexes = append(regexes, mt.GetSafeRegex().GetRegex())
				case mt.GetPath() != "":
					out = append(out, "path:"+mt.GetPath())
				default:
					out = append(out, "prefix:"+mt.GetPrefix())
				}
				for _, h := range mt.GetHeaders() {
					if re := h.GetSafeRegexMatch().GetRegex(); re != "" {
						regexes = append(regexes, re)
					}
					if re := h.GetStringMatch().GetSafeRegex().GetRegex(); re != "" {
						regexes = append(regexes, re)
					}
				}
				for _, re := range regexes {
					if _, err := regexp.Compile(re); err != nil {
						t.Errorf("route table %s holds a regex Envoy refuses: %v", rc.GetName(), err)
					}
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestRouteBreakingARuleLeftOut: a stored route whose spec breaks a rule
// the API now enforces (a regex that does not compile, written before
// the rule existed) is left out of its router's route table, logged and
// counted, and the router's other routes are served: at load, and on the
// watch, where a good route replaced by a bad version goes too, and
// comes back when it is mended. Before, the route was translated and
// sent, and Envoy refused the whole route table.
func TestRouteBreakingARuleLeftOut(t *testing.T) {
	st := routerStore(t)
	routeTo(t, st, "a-good", `{"prefix":"/good"}`)
	routeTo(t, st, "b-bad", `{"path":{"regex":"(a"}}`)
	routeTo(t, st, "c-rest", `{"prefix":"/"}`)
	skipped := prometheus.NewCounter(prometheus.CounterOpts{Name: "skipped"})
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) { o.Skipped = skipped })
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(rdsType, "", "", []string{"rds_egress_http_8080"}, "")
	rds := c.next()
	if got, want := routeMatches(t, rds), []string{"prefix:/", "prefix:/good"}; !slices.Equal(got, want) {
		t.Fatalf("route matches at load %v, want %v", got, want)
	}
	if n := srv.logs.count("skipping undecodable record"); n != 1 || srv.logs.count("route/r/b-bad") == 0 {
		t.Errorf("logged %d skipped records (want 1, naming route/r/b-bad)", n)
	}
	if n := testutil.ToFloat64(skipped); n != 1 {
		t.Errorf("counted %v skipped records, want 1", n)
	}
	c.ack(rds, "rds_egress_http_8080")

	// On the watch: a good route replaced by a bad version (a header
	// regex this time) goes.
	putRaw(t, st, ref("m", appmesh.KindRoute, "r", "a-good"),
		`{"meshName":"m","virtualRouterName":"r","routeName":"a-good","spec":{"httpRoute":{"match":{"prefix":"/good","headers":[{"name":"x","match":{"regex":"[z-a]"}}]},"action":{"weightedTargets":[{"virtualNode":"blue","weight":1}]}}}}`)
	rds = c.next()
	if got, want := routeMatches(t, rds), []string{"prefix:/"}; !slices.Equal(got, want) {
		t.Fatalf("route matches after a-good broke %v, want %v", got, want)
	}
	if n := testutil.ToFloat64(skipped); n != 2 {
		t.Errorf("counted %v skipped records, want 2", n)
	}
	c.ack(rds, "rds_egress_http_8080")
	routeTo(t, st, "a-good", `{"prefix":"/good"}`)
	rds = c.next()
	if got, want := routeMatches(t, rds), []string{"prefix:/", "prefix:/good"}; !slices.Equal(got, want) {
		t.Fatalf("route matches after a-good was mended %v, want %v", got, want)
	}
	if n := srv.logs.count("skipping undecodable record"); n != 2 || srv.logs.count("route/r/a-good") == 0 {
		t.Errorf("logged %d skipped records (want 2, the second naming route/r/a-good)", n)
	}
}

// TestUndecodableOnTheWatch: a record put that does not decode, App Mesh
// or Cloud Map, is logged and counted as at load, and leaves its readers
// as a fresh load would: without the record, not on its last version
// that decoded.
func TestUndecodableOnTheWatch(t *testing.T) {
	st := routerStore(t)
	routeTo(t, st, "a-good", `{"prefix":"/good"}`)
	routeTo(t, st, "c-rest", `{"prefix":"/"}`)
	skipped := prometheus.NewCounter(prometheus.CounterOpts{Name: "skipped"})
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) { o.Skipped = skipped })
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(rdsType, "", "", []string{"rds_egress_http_8080"}, "")
	rds := c.next()
	if got, want := routeMatches(t, rds), []string{"prefix:/", "prefix:/good"}; !slices.Equal(got, want) {
		t.Fatalf("route matches at load %v, want %v", got, want)
	}
	c.ack(rds, "rds_egress_http_8080")
	c.request(edsType, "", "", []string{"cds_egress_m_blue_http_8080"}, "")
	eds := c.next()
	if got := edsEndpoints(t, eds); got != 1 {
		t.Fatalf("EDS: %d endpoints of blue, want 1", got)
	}
	c.ack(eds, "cds_egress_m_blue_http_8080")
	if n := testutil.ToFloat64(skipped); n != 0 {
		t.Fatalf("counted %v skipped records at load, want 0", n)
	}

	// An App Mesh record that does not decode replaces a good one.
	put(t, st, ref("m", appmesh.KindRoute, "r", "a-good").Key(), map[string]any{"spec": "not a spec"})
	rds = c.next()
	if got, want := routeMatches(t, rds), []string{"prefix:/"}; !slices.Equal(got, want) {
		t.Fatalf("route matches after a-good stopped decoding %v, want %v", got, want)
	}
	c.ack(rds, "rds_egress_http_8080")
	// A Cloud Map instance that does not decode replaces a good one.
	put(t, st, "cloudmap/instance/srv-blue/blue-1", map[string]any{"Instance": map[string]any{"Id": 5}})
	eds = c.next()
	if n := testutil.ToFloat64(skipped); n != 2 {
		t.Errorf("counted %v skipped records, want 2", n)
	}
	for _, key := range []string{"route/r/a-good", "cloudmap/instance/srv-blue/blue-1"} {
		if srv.logs.count("skipping undecodable record") < 2 || srv.logs.count(key) == 0 {
			t.Errorf("no skipping undecodable record line names %s", key)
		}
	}
	if got := edsEndpoints(t, eds); got != 0 {
		t.Errorf("blue has %d endpoints after its one instance stopped decoding, want 0 (as a fresh load)", got)
	}
}

// edsEndpoints counts the endpoints of an EDS response.
func edsEndpoints(t *testing.T, r *discovery.DiscoveryResponse) int {
	t.Helper()
	n := 0
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		cla, ok := m.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			t.Fatalf("%T in an EDS response", m)
		}
		for _, l := range cla.GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
	}
	return n
}

// compactedOnce is a store whose first Watch answers ErrCompacted, as
// etcd does when the revision a load read is compacted before its watch
// opens: follow.Load then reads a fresh snapshot.
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

// TestLoadReportsSkipsOnce: a load read twice (its first snapshot
// compacted before the watch opened) logs and counts each Cloud Map record
// it leaves out once, for the snapshot it keeps; it reported every read.
func TestLoadReportsSkipsOnce(t *testing.T) {
	st := colorStore(t)
	bad := "cloudmap/instance/srv-blue/blue-2"
	put(t, st, bad, map[string]any{"Instance": map[string]any{"Id": 5}})
	skipped := prometheus.NewCounter(prometheus.CounterOpts{Name: "skipped"})
	cs := &compactedOnce{Store: st}
	srv := startServer(t, cs, translate.TranslateWith, withChecks, func(o *Options) { o.Skipped = skipped })
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(edsType, "", "", []string{"cds_egress_m_blue_http_8080"}, "")
	if got := edsEndpoints(t, c.next()); got != 1 {
		t.Fatalf("EDS: %d endpoints of blue, want 1", got)
	}
	if !cs.watched.Load() {
		t.Fatal("the server opened no watch")
	}
	if n := testutil.ToFloat64(skipped); n != 1 {
		t.Errorf("counted %v skipped records, want 1", n)
	}
	if n := srv.logs.count(bad); n != 1 {
		t.Errorf("logged %d lines naming %s, want 1", n, bad)
	}
}

// caGetUnavailableOnce is a store whose first read of the CA's state
// fails as etcd without a quorum fails.
type caGetUnavailableOnce struct {
	store.Store
	failed atomic.Bool
}

func (s *caGetUnavailableOnce) View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	return s.Store.View(ctx, func(tx store.Tx) error { return fn(caGetTx{tx, s}) })
}

type caGetTx struct {
	store.Tx
	s *caGetUnavailableOnce
}

func (t caGetTx) Get(key string) (store.KV, bool, error) {
	if key == ca.StateKey && !t.s.failed.Swap(true) {
		return store.KV{}, false, fmt.Errorf("read %s: %w", key, store.ErrUnavailable)
	}
	return t.Tx.Get(key)
}

// TestCAReadFailureReadAgain: a store error reading the CA's state fails
// the load, which is read again, so the CA is served; it was taken for a
// state that does not decode, and the server served no CA until the CA
// changed.
func TestCAReadFailureReadAgain(t *testing.T) {
	st, authority := tlsStore(t)
	cs := &caGetUnavailableOnce{Store: st}
	srv := startServer(t, cs, translate.TranslateWith, withChecks, func(o *Options) { o.InsecureSecrets = true })
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(sdsType, "", "", []string{"trust"}, "")
	bundle := bundleOf(t, secrets(t, c.next())["trust"])
	if !cs.failed.Load() {
		t.Fatal("the CA's state was never read")
	}
	if !slices.Equal(fingerprints(bundle), []string{authority.State().SignerRoot().Fingerprint()}) {
		t.Fatal("bundle is not the CA's root")
	}
	if n := srv.logs.count("undecodable CA"); n != 0 {
		t.Errorf("logged %d lines about the CA state, want none", n)
	}
}
