package translate

import (
	"errors"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

func TestTranslateErrors(t *testing.T) {
	v, owner := replay(t, "testdata/tutorial")
	id := func(kind appmesh.Kind, name string, proxyless bool) Identity {
		return Identity{MeshOwner: owner, Mesh: "color-mesh", Kind: kind, Name: name, Proxyless: proxyless}
	}
	tests := []struct {
		name string
		v    *View
		id   Identity
		want error
	}{
		{"no view", nil, id(appmesh.KindVirtualNode, "red", false), ErrNotFound},
		{"no mesh", &View{}, id(appmesh.KindVirtualNode, "red", false), ErrNotFound},
		{"unknown node", v, id(appmesh.KindVirtualNode, "purple", false), ErrNotFound},
		{"unknown proxyless node", v, id(appmesh.KindVirtualNode, "purple", true), ErrNotFound},
		{"unknown gateway", v, id(appmesh.KindVirtualGateway, "back-door", false), ErrNotFound},
		{"proxyless gateway", v, id(appmesh.KindVirtualGateway, "color-gateway", true), errors.ErrUnsupported},
		{"router identity", v, id(appmesh.KindVirtualRouter, "color-router", false), errors.ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Translate(tt.v, tt.id)
			if !errors.Is(err, tt.want) || r != nil {
				t.Fatalf("Translate = %v, %v; want nil, %v", r, err, tt.want)
			}
		})
	}
}

// TestBackendAddedThenRemoved follows the tutorial's asymmetry: blue may call
// red, red may not call blue until blue is a backend.
func TestBackendAddedThenRemoved(t *testing.T) {
	v, owner := replay(t, "testdata/tutorial")
	red := Identity{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualNode, Name: "red"}
	hosts := func() map[string]bool {
		r, err := Translate(v, red)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(r); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, rc := range r.Routes {
			for _, vh := range rc.GetVirtualHosts() {
				out[vh.GetName()] = true
			}
		}
		return out
	}
	if hosts()["blue.colors.local"] {
		t.Fatal("red reaches blue before blue is its backend")
	}
	spec := *v.VirtualNodes["red"].Spec
	name := "blue.colors.local"
	spec.Backends = append(append([]appmesh.Backend(nil), spec.Backends...), appmesh.Backend{VirtualService: &appmesh.VirtualServiceBackend{VirtualServiceName: &name}})
	orig := v.VirtualNodes["red"]
	v.VirtualNodes["red"] = &appmesh.VirtualNodeData{MeshName: orig.MeshName, VirtualNodeName: orig.VirtualNodeName, Spec: &spec}
	if h := hosts(); !h["blue.colors.local"] || !h["router.colors.local"] {
		t.Fatalf("after adding blue, red reaches %v", h)
	}
	v.VirtualNodes["red"] = orig
	if hosts()["blue.colors.local"] {
		t.Fatal("red still reaches blue after the backend was removed")
	}
}
