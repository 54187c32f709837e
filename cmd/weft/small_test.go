package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEnvoyBootstrapRefusesBadARN: an id the xDS server would refuse is
// refused when the bootstrap is made, with the forms it accepts; the
// forms it accepts pass.
func TestEnvoyBootstrapRefusesBadARN(t *testing.T) {
	t.Setenv("APPMESH_RESOURCE_ARN", "")
	for _, bad := range []string{"foo", "mesh/m/virtualRouter/r", "arn:aws:s3:::bucket", "mesh//virtualNode/n"} {
		var out, errOut bytes.Buffer
		err := runEnvoy(t.Context(), []string{"bootstrap", "--resource-arn", bad, "--xds", "127.0.0.1:15010"}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "--resource-arn") || out.Len() != 0 {
			t.Errorf("--resource-arn %s: %v, printed %d bytes; want a refusal", bad, err, out.Len())
		}
	}
	for _, good := range []string{"mesh/color-mesh/virtualNode/red", "mesh/color-mesh@444455556666/virtualGateway/gw",
		"arn:aws:appmesh:us-east-1:111122223333:mesh/color-mesh/virtualNode/red"} {
		var out, errOut bytes.Buffer
		if err := runEnvoy(t.Context(), []string{"bootstrap", "--resource-arn", good, "--xds", "127.0.0.1:15010"}, &out, &errOut); err != nil {
			t.Errorf("--resource-arn %s: %v", good, err)
		}
	}
}

// TestProxyWithoutARN names the flag and the variable to set.
func TestProxyWithoutARN(t *testing.T) {
	for _, v := range []string{"APPMESH_RESOURCE_ARN", "APPMESH_RESOURCE_NAME", "APPMESH_VIRTUAL_NODE_NAME"} {
		t.Setenv(v, "")
	}
	var out, errOut bytes.Buffer
	err := runProxy(t.Context(), []string{"--admin-addr", ""}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--resource-arn") || !strings.Contains(err.Error(), "APPMESH_RESOURCE_ARN") {
		t.Fatalf("weft proxy without an ARN: %v", err)
	}
}

// TestHelpDescribes: the long-running commands say what they do before
// their flags.
func TestHelpDescribes(t *testing.T) {
	for name, want := range map[string]string{"proxy": "data plane", "server": "control plane"} {
		for _, c := range commands() {
			if c.name != name {
				continue
			}
			var out, errOut bytes.Buffer
			c.run(t.Context(), []string{"-h"}, &out, &errOut)
			if help := errOut.String() + out.String(); !strings.Contains(help, want) || !strings.HasPrefix(help, "usage: weft "+name) {
				t.Errorf("weft %s -h:\n%s\nwant a usage line and %q", name, help, want)
			}
		}
	}
}
