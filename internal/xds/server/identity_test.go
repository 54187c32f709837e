package server

import (
	"errors"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

func TestParseNodeID(t *testing.T) {
	vn := func(owner, mesh, name string) translate.Identity {
		return translate.Identity{MeshOwner: owner, Mesh: mesh, Kind: appmesh.KindVirtualNode, Name: name}
	}
	tests := []struct {
		id   string
		want translate.Identity
		bad  bool
	}{
		{id: "mesh/color-mesh/virtualNode/red", want: vn("111", "color-mesh", "red")},
		{id: "arn:aws:appmesh:us-west-2:222:mesh/color-mesh/virtualNode/red", want: vn("222", "color-mesh", "red")},
		{id: "arn:aws-cn:appmesh-preview:cn-north-1:222:mesh/m/virtualNode/red", want: vn("222", "m", "red")},
		{id: "mesh/color-mesh@333/virtualNode/red", want: vn("333", "color-mesh", "red")},
		{id: "arn:aws:appmesh:us-west-2:222:mesh/color-mesh@333/virtualNode/red", want: vn("333", "color-mesh", "red")},
		{id: "mesh/app-mesh/virtualGateway/appmesh-gateway_prod", want: translate.Identity{MeshOwner: "111", Mesh: "app-mesh", Kind: appmesh.KindVirtualGateway, Name: "appmesh-gateway_prod"}},
		{id: "red", bad: true},
		{id: "", bad: true},
		{id: "mesh/color-mesh/virtualNode", bad: true},
		{id: "mesh/color-mesh/virtualNode/red/extra", bad: true},
		{id: "mesh/color-mesh/virtualService/red", bad: true},
		{id: "mesh//virtualNode/red", bad: true},
		{id: "mesh/color-mesh/virtualNode/", bad: true},
		{id: "mesh/color-mesh@/virtualNode/red", bad: true},
		{id: "arn:aws:s3:us-west-2:222:mesh/m/virtualNode/red", bad: true},
		{id: "arn:aws:appmesh:us-west-2", bad: true},
		{id: "node/color-mesh/virtualNode/red", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := ParseNodeID(tt.id, "111")
			if tt.bad {
				if !errors.Is(err, errNodeID) {
					t.Fatalf("ParseNodeID(%q) = %+v, %v; want a malformed node id error", tt.id, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseNodeID(%q) = %+v, %v; want %+v", tt.id, got, err, tt.want)
			}
		})
	}
}

func TestProxyless(t *testing.T) {
	meta := func(v *structpb.Value) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{ProxylessMetadataKey: v}}
	}
	tests := []struct {
		name string
		node *core.Node
		want bool
	}{
		{"grpc-go", &core.Node{UserAgentName: "gRPC Go"}, true},
		{"grpc-js", &core.Node{UserAgentName: "gRPC Node Pure JS"}, true},
		{"c-core", &core.Node{UserAgentName: "gRPC C-core"}, true},
		{"envoy", &core.Node{UserAgentName: "envoy"}, false},
		{"none", &core.Node{}, false},
		{"metadata true", &core.Node{UserAgentName: "weft-proxy", Metadata: meta(structpb.NewBoolValue(true))}, true},
		{"metadata string", &core.Node{Metadata: meta(structpb.NewStringValue("true"))}, true},
		{"metadata false overrides grpc", &core.Node{UserAgentName: "gRPC Go", Metadata: meta(structpb.NewBoolValue(false))}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxyless(tt.node); got != tt.want {
				t.Fatalf("proxyless(%v) = %v, want %v", tt.node, got, tt.want)
			}
		})
	}
}

func TestSDSSocket(t *testing.T) {
	meta := func(v *structpb.Value) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{SDSSocketMetadataKey: v}}
	}
	for _, tt := range []struct {
		name string
		node *core.Node
		want bool
	}{
		{"none", &core.Node{UserAgentName: "envoy"}, false},
		{"true", &core.Node{Metadata: meta(structpb.NewBoolValue(true))}, true},
		{"string", &core.Node{Metadata: meta(structpb.NewStringValue("true"))}, true},
		{"false", &core.Node{Metadata: meta(structpb.NewBoolValue(false))}, false},
		{"other string", &core.Node{Metadata: meta(structpb.NewStringValue("yes"))}, false},
	} {
		if got := sdsSocket(tt.node); got != tt.want {
			t.Errorf("%s: sdsSocket = %v, want %v", tt.name, got, tt.want)
		}
	}
}
