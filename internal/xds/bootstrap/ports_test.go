package bootstrap

import (
	"testing"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestBootstrapListenerPorts: moved interception ports reach weft server
// in the node metadata, in the form it reads; one port for both is
// refused; the defaults add nothing.
func TestBootstrapListenerPorts(t *testing.T) {
	b, err := Build(Config{ResourceARN: "mesh/m/virtualNode/a", XDS: "127.0.0.1:15010", AdminPort: 9901, IngressPort: 16000, EgressPort: 16001})
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(b); err != nil {
		t.Fatal(err)
	}
	in, out, err := translate.ListenerPorts(b.GetNode().GetMetadata())
	if err != nil || in != 16000 || out != 16001 {
		t.Fatalf("metadata %v: %d %d %v", b.GetNode().GetMetadata(), in, out, err)
	}
	if _, err := Build(Config{ResourceARN: "mesh/m/virtualNode/a", XDS: "127.0.0.1:15010", AdminPort: 9901, IngressPort: 15001}); err == nil {
		t.Fatal("ingress port 15001 (the egress default) accepted")
	}
	b, err = Build(Config{ResourceARN: "mesh/m/virtualNode/a", XDS: "127.0.0.1:15010", AdminPort: 9901})
	if err != nil || b.GetNode().GetMetadata() != nil {
		t.Fatalf("default ports: metadata %v, %v", b.GetNode().GetMetadata(), err)
	}
}
