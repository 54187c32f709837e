package translate

import (
	"errors"
	"slices"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

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

// TestSDSSocket: an App Mesh sds.secretName is weft's to serve over ADS
// and listed in Secrets by role, unless the proxy has a local SDS agent
// (Identity.SDSSocket): then it is the agent's, on the bootstrap's
// socket cluster, and weft serves nothing for it. ACM names stay weft's
// either way.
func TestSDSSocket(t *testing.T) {
	v, owner := replay(t, "testdata/features")
	id := Identity{MeshOwner: owner, Mesh: *v.Mesh.MeshName, Kind: appmesh.KindVirtualNode, Name: "grpc-a"}
	sources := func(r *Resources) map[string]string {
		out := map[string]string{}
		for _, l := range r.Listeners {
			for _, fc := range l.GetFilterChains() {
				ts := fc.GetTransportSocket()
				if ts == nil {
					continue
				}
				var ctx tlsv3.DownstreamTlsContext
				if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
					t.Fatal(err)
				}
				c := ctx.GetCommonTlsContext()
				for _, s := range append(c.GetTlsCertificateSdsSecretConfigs(), c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()) {
					if s == nil {
						continue
					}
					src := "ads"
					if s.GetSdsConfig().GetAds() == nil {
						src = s.GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
					}
					out[s.GetName()] = src
				}
			}
		}
		return out
	}
	r, err := Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	want := []SecretRef{{"spiffe://feature.local", SecretValidation}, {"spiffe://feature.local/grpc-a", SecretCertificate}}
	if !slices.Equal(r.Secrets, want) {
		t.Fatalf("Secrets %v, want %v", r.Secrets, want)
	}
	if got := sources(r); got["spiffe://feature.local/grpc-a"] != "ads" || got["spiffe://feature.local"] != "ads" {
		t.Fatalf("secret sources %v", got)
	}
	if !slices.Contains(r.LeafDNSNames, "grpc-a.feature.local") {
		t.Fatalf("leaf DNS names %v", r.LeafDNSNames)
	}
	id.SDSSocket = true
	r, err = Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Secrets) != 0 || r.LeafDNSNames != nil {
		t.Fatalf("with an SDS agent, weft serves %v (leaf names %v)", r.Secrets, r.LeafDNSNames)
	}
	if got := sources(r); got["spiffe://feature.local/grpc-a"] != "static_cluster_sds_unix_socket" || got["spiffe://feature.local"] != "static_cluster_sds_unix_socket" {
		t.Fatalf("secret sources with an agent %v", got)
	}
	if err := Check(r); err != nil {
		t.Fatal(err)
	}
}
