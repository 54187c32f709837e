package shapetest_test

import (
	"slices"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/shape/shapetest"
)

// TestDocsCoverAndValidate checks, on both of weft's models, that the
// documents Docs builds satisfy the model and together set every member and
// enum value.
func TestDocsCoverAndValidate(t *testing.T) {
	for _, c := range []struct {
		model  *shape.Model
		shapes []string
	}{
		// Spec shapes: the inputs' other members are in the URI.
		{appmesh.Model(), []string{"MeshSpec", "VirtualNodeSpec", "VirtualServiceSpec", "VirtualRouterSpec",
			"RouteSpec", "VirtualGatewaySpec", "GatewayRouteSpec", "TagRef"}},
		{cloudmap.Model(), []string{"CreateServiceRequest", "RegisterInstanceRequest", "CreatePrivateDnsNamespaceRequest"}},
	} {
		g := &shapetest.Maximal{Model: c.model}
		for _, name := range c.shapes {
			docs := g.Docs(name)
			for i, d := range docs {
				if vs := c.model.Validate(name, d); len(vs) > 0 {
					t.Errorf("%s document %d: %s", name, i, shape.Message(vs))
				}
			}
			if all, got := g.Members(name), g.Covered(name, docs); !slices.Equal(all, got) {
				t.Errorf("%s: %d documents cover %d of %d members and enum values", name, len(docs), len(got), len(all))
			}
		}
	}
}
