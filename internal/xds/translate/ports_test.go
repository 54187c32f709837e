package translate

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestListenerPorts: a proxy that names its interception ports gets its
// ingress and egress listeners there (a gateway, its self-redirect hop),
// and a Memo never hands it the egress of a proxy on other ports.
func TestListenerPorts(t *testing.T) {
	v, owner := replay(t, "testdata/tutorial")
	listeners := func(id Identity, m *Memo) []string {
		t.Helper()
		r, err := TranslateWith(v, id, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(r); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range r.Listeners {
			out = append(out, l.GetName()+"@"+l.GetAddress().GetSocketAddress().GetAddress()+":"+port(l.GetAddress().GetSocketAddress().GetPortValue()))
		}
		for _, c := range r.Clusters {
			if strings.Contains(c.GetName(), "self_redirect") {
				sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, c.GetName()+"->"+port(sa.GetPortValue()))
			}
		}
		slices.Sort(out)
		return out
	}
	blue := Identity{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualNode, Name: "blue"}
	moved := blue
	moved.IngressPort, moved.EgressPort = 16000, 16001
	m := NewMemo()
	if got, want := listeners(blue, m), []string{"lds_egress_0.0.0.0_15001@0.0.0.0:15001", "lds_ingress_0.0.0.0_15000@0.0.0.0:15000"}; !slices.Equal(got, want) {
		t.Fatalf("default ports: %v, want %v", got, want)
	}
	for range 2 { // the second time, a Memo holding the default egress has seen this node's inputs twice
		if got, want := listeners(moved, m), []string{"lds_egress_0.0.0.0_16001@0.0.0.0:16001", "lds_ingress_0.0.0.0_16000@0.0.0.0:16000"}; !slices.Equal(got, want) {
			t.Fatalf("ports 16000/16001: %v, want %v", got, want)
		}
		listeners(blue, m)
	}
	gw := Identity{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualGateway, Name: "color-gateway", EgressPort: 16001}
	if got, want := listeners(gw, nil), []string{"cds_ingress_color-mesh_color-gateway_self_redirect_http_16001->16001", "lds_egress_0.0.0.0_16001@127.0.0.1:16001", "lds_ingress_0.0.0.0_80@0.0.0.0:80"}; !slices.Equal(got, want) {
		t.Fatalf("gateway on egress port 16001: %v, want %v", got, want)
	}
}

func TestListenerPortsMetadata(t *testing.T) {
	md := func(kv map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(kv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		md      map[string]any
		in, out uint32
		err     string
	}{
		{nil, 0, 0, ""},
		{map[string]any{IngressPortMetadataKey: 16000, EgressPortMetadataKey: "16001"}, 16000, 16001, ""},
		{map[string]any{IngressPortMetadataKey: 15000, EgressPortMetadataKey: 15001}, 0, 0, ""}, // the defaults
		{map[string]any{EgressPortMetadataKey: 0}, 0, 0, `node.metadata["weft.egress_port"]: 0 is not a port`},
		{map[string]any{IngressPortMetadataKey: 70000}, 0, 0, "not a port 1-65535"},
		{map[string]any{IngressPortMetadataKey: 1.5}, 0, 0, "not a port 1-65535"},
		{map[string]any{IngressPortMetadataKey: "http"}, 0, 0, `"http" is not a port number`},
		{map[string]any{IngressPortMetadataKey: true}, 0, 0, "want a port number"},
		{map[string]any{IngressPortMetadataKey: 15001}, 0, 0, "both 15001"},
	} {
		in, out, err := ListenerPorts(md(c.md))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: %v, want an error containing %q", c.md, err, c.err)
			}
			continue
		}
		if err != nil || in != c.in || out != c.out {
			t.Errorf("%v: %d %d %v, want %d %d", c.md, in, out, err, c.in, c.out)
		}
	}
}
