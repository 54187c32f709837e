package appmesh

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCheckSpec: each rule of CheckSpec where the specs hold what it
// checks, by kind: durations in either unit at the bound and past it;
// regexes of route paths, header matches and gateway routes; DNS
// hostnames and backends. A spec within every rule passes.
func TestCheckSpec(t *testing.T) {
	cases := []struct {
		name string
		spec any
		json string
		err  string // "" when the spec is accepted
	}{
		{"seconds at the bound", &VirtualNodeSpec{}, `{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":315576000000}}}}]}`, ""},
		{"seconds past it", &VirtualNodeSpec{}, `{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":315576000001}}}}]}`, "spec.listeners.1.member.timeout.http.perRequest.value"},
		{"milliseconds at the bound", &RouteSpec{}, `{"httpRoute":{"retryPolicy":{"maxRetries":1,"perRetryTimeout":{"unit":"ms","value":315576000000000}}}}`, ""},
		{"milliseconds past it", &RouteSpec{}, `{"httpRoute":{"retryPolicy":{"maxRetries":1,"perRetryTimeout":{"unit":"ms","value":315576000000001}}}}`, "perRetryTimeout.value"},
		{"path regex", &RouteSpec{}, `{"httpRoute":{"match":{"path":{"regex":"^/a(b|c)$"}}}}`, ""},
		{"bad path regex", &RouteSpec{}, `{"httpRoute":{"match":{"path":{"regex":"(["}}}}`, "spec.httpRoute.match.path.regex"},
		{"bad header regex", &RouteSpec{}, `{"httpRoute":{"match":{"headers":[{"name":"x","match":{"regex":"a{2,1}"}}]}}}`, "spec.httpRoute.match.headers.1.member.match.regex"},
		{"bad gRPC metadata regex", &RouteSpec{}, `{"grpcRoute":{"match":{"metadata":[{"name":"x","match":{"regex":"*"}}]}}}`, "spec.grpcRoute.match.metadata.1.member.match.regex"},
		{"bad gateway route regex", &GatewayRouteSpec{}, `{"httpRoute":{"match":{"path":{"regex":"(?<"}}}}`, "spec.httpRoute.match.path.regex"},
		{"hostname", &VirtualNodeSpec{}, `{"serviceDiscovery":{"dns":{"hostname":"web.local"}}}`, ""},
		{"empty hostname", &VirtualNodeSpec{}, `{"serviceDiscovery":{"dns":{"hostname":""}}}`, "length greater than or equal to 1"},
		{"hostname with a NUL", &VirtualNodeSpec{}, `{"serviceDiscovery":{"dns":{"hostname":"a\u0000b"}}}`, "control characters"},
		{"backend", &VirtualNodeSpec{}, `{"backends":[{"virtualService":{"virtualServiceName":"web.local"}}]}`, ""},
		{"backend with a CR", &VirtualNodeSpec{}, `{"backends":[{"virtualService":{"virtualServiceName":"web\rlocal"}}]}`, "spec.backends.1.member.virtualService.virtualServiceName"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := json.Unmarshal([]byte(c.json), c.spec); err != nil {
				t.Fatal(err)
			}
			err := CheckSpec(c.spec)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err != "" && err == nil:
				t.Fatal("accepted")
			case c.err != "" && !strings.Contains(err.Error(), c.err):
				t.Fatalf("%v, want it to name %q", err, c.err)
			}
		})
	}
}
