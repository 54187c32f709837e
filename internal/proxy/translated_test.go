package proxy

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// translatedResources is every resource the translator gives id in v, for
// a harness to push: listeners (each passed to mod first, when given: a
// test's address), routes, clusters and endpoints.
func translatedResources(t testing.TB, v *translate.View, id translate.Identity, mod func(*listenerv3.Listener)) []types.Resource {
	t.Helper()
	rs, err := translate.Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	var push []types.Resource
	for _, r := range rs.Listeners {
		if mod != nil {
			mod(r)
		}
		push = append(push, r)
	}
	for _, r := range rs.Routes {
		push = append(push, r)
	}
	for _, r := range rs.Clusters {
		push = append(push, r)
	}
	for _, r := range rs.Endpoints {
		push = append(push, r)
	}
	return push
}
