package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestInitialFetchTimeoutValue: a malformed ENVOY_INITIAL_FETCH_TIMEOUT
// stops weft proxy with a message naming the variable (the forms it
// accepts: internal/proxycmd's TestSeconds).
func TestInitialFetchTimeoutValue(t *testing.T) {
	t.Setenv("ENVOY_INITIAL_FETCH_TIMEOUT", "soon")
	var out, errOut bytes.Buffer
	err := runProxy(t.Context(), []string{"--resource-arn", "mesh/m/virtualNode/n", "--admin-addr", ""}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "ENVOY_INITIAL_FETCH_TIMEOUT") {
		t.Fatalf("ENVOY_INITIAL_FETCH_TIMEOUT=soon: %v, want an error naming it", err)
	}
}

// TestListenerPortFlags: weft proxy and weft envoy bootstrap refuse one
// port for ingress and egress, or one out of range, naming the flags.
func TestListenerPortFlags(t *testing.T) {
	for _, args := range [][]string{{"--ingress-port", "15001"}, {"--egress-port", "70000"}, {"--ingress-port", "0"}} {
		var out, errOut bytes.Buffer
		err := runProxy(t.Context(), append([]string{"--resource-arn", "mesh/m/virtualNode/n", "--admin-addr", ""}, args...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "--ingress-port") {
			t.Errorf("weft proxy %v: %v", args, err)
		}
		err = runEnvoyBootstrap(append([]string{"--resource-arn", "mesh/m/virtualNode/n"}, args...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "--ingress-port") {
			t.Errorf("weft envoy bootstrap %v: %v", args, err)
		}
	}
	var out, errOut bytes.Buffer
	if err := runEnvoyBootstrap([]string{"--resource-arn", "mesh/m/virtualNode/n", "--egress-port", "16001"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "weft.egress_port") {
		t.Fatalf("bootstrap with --egress-port 16001: %v\n%s", err, out.String())
	}
}
