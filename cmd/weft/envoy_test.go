package main

import (
	"bytes"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/internal/xds/bootstrap"
)

func TestEnvoyBootstrap(t *testing.T) {
	t.Setenv("APPMESH_RESOURCE_ARN", "")
	t.Setenv("APPMESH_XDS_ENDPOINT", "10.0.0.5:15010")
	t.Setenv("ENVOY_ADMIN_ACCESS_PORT", "9902")
	var out, errOut bytes.Buffer
	arn := "arn:aws:appmesh:us-east-1:111122223333:mesh/color-mesh/virtualNode/red"
	if err := runEnvoy(t.Context(), []string{"bootstrap", "--resource-arn", arn}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(out.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if err := bootstrap.Validate(&b); err != nil {
		t.Fatal(err)
	}
	sa := b.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if b.GetNode().GetId() != arn || sa.GetAddress() != "10.0.0.5" || sa.GetPortValue() != 15010 ||
		b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 9902 {
		t.Fatalf("bootstrap does not follow the flags and APPMESH_* variables:\n%s", out.String())
	}
	if err := runEnvoy(t.Context(), []string{"bootstrap", "--xds", "x:1"}, &out, &errOut); err == nil {
		t.Fatal("a bootstrap without a resource ARN was printed")
	}
}
