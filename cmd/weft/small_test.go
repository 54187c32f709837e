package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
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

// TestServerRefusesAccountID: weft server refuses, before it opens its
// store, an --account-id (or WEFT_ACCOUNT_ID) that is not 12 digits:
// every resource's owner and ARN would hold it.
func TestServerRefusesAccountID(t *testing.T) {
	// Stopped already: a server that took the id would stop at once.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, id := range []string{"acme", "11112222333", "1111222233334", "11112222333x", ""} {
		dir := filepath.Join(t.TempDir(), "data")
		var out, errOut bytes.Buffer
		err := runServer(ctx, []string{"--account-id", id, "--data-dir", dir, "--dns-addr", "", "--xds-addr", ""}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "--account-id") || !strings.Contains(err.Error(), "12 digits") {
			t.Errorf("--account-id %q: %v; want a refusal naming the flag", id, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("--account-id %q: the data directory was made: %v", id, err)
		}
	}
	t.Setenv("WEFT_ACCOUNT_ID", "acme")
	var out, errOut bytes.Buffer
	if err := runServer(ctx, []string{"--data-dir", filepath.Join(t.TempDir(), "data"), "--dns-addr", "", "--xds-addr", ""}, &out, &errOut); err == nil || !strings.Contains(err.Error(), `"acme"`) {
		t.Errorf("WEFT_ACCOUNT_ID=acme: %v; want a refusal", err)
	}
}
