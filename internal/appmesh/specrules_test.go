package appmesh

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/shape"
)

// TestChecks: each of the rules the model's checks add, where requests hold
// what it checks, by kind: durations in either unit at the bound and past
// it; regexes of route paths, header and gRPC metadata matches and gateway
// routes; DNS hostnames and backends. A request within every rule passes;
// one past a rule gets that rule's one violation, phrased and located as
// the model's own.
func TestChecks(t *testing.T) {
	const (
		node   = `"meshName":"m","virtualNodeName":"n"`
		route  = `"meshName":"m","virtualRouterName":"r","routeName":"x"`
		gwr    = `"meshName":"m","virtualGatewayName":"g","gatewayRouteName":"x"`
		action = `"action":{"weightedTargets":[{"virtualNode":"n","weight":1}]}`
		target = `"action":{"target":{"virtualService":{"virtualServiceName":"s"}}}`
	)
	cases := []struct {
		name, shape, doc string
		want             string // the whole message; "" when the request is accepted
	}{
		{"seconds at the bound", "CreateVirtualNodeInput",
			`{` + node + `,"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":315576000000}}}}]}}`, ""},
		{"seconds past it", "CreateVirtualNodeInput",
			`{` + node + `,"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":315576000001}}}}]}}`,
			"1 validation error detected: Value '315576000001' at 'spec.listeners.1.member.timeout.http.perRequest.value' failed to satisfy constraint: Member must have value less than or equal to 315576000000 (s)"},
		{"milliseconds at the bound", "CreateRouteInput",
			`{` + route + `,"spec":{"httpRoute":{"match":{"prefix":"/"},` + action + `,"retryPolicy":{"maxRetries":1,"perRetryTimeout":{"unit":"ms","value":315576000000000}}}}}`, ""},
		{"milliseconds past it", "UpdateRouteInput",
			`{` + route + `,"spec":{"httpRoute":{"match":{"prefix":"/"},` + action + `,"retryPolicy":{"maxRetries":1,"perRetryTimeout":{"unit":"ms","value":315576000000001}}}}}`,
			"1 validation error detected: Value '315576000000001' at 'spec.httpRoute.retryPolicy.perRetryTimeout.value' failed to satisfy constraint: Member must have value less than or equal to 315576000000000 (ms)"},
		{"no unit: the bound in seconds", "CreateVirtualNodeInput",
			`{` + node + `,"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"tcp":{"idle":{"value":315576000001}}}}]}}`,
			"1 validation error detected: Value '315576000001' at 'spec.listeners.1.member.timeout.tcp.idle.value' failed to satisfy constraint: Member must have value less than or equal to 315576000000"},
		{"beyond 64 bits: the model's rule alone", "CreateVirtualNodeInput",
			`{` + node + `,"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"tcp":{"idle":{"unit":"s","value":9223372036854775808}}}}]}}`,
			"1 validation error detected: Value '9223372036854775808' at 'spec.listeners.1.member.timeout.tcp.idle.value' failed to satisfy constraint: Member must be an integer"},
		{"path regex", "CreateRouteInput", `{` + route + `,"spec":{"httpRoute":{"match":{"path":{"regex":"^/a(b|c)$"}},` + action + `}}}`, ""},
		{"bad path regex", "CreateRouteInput", `{` + route + `,"spec":{"httpRoute":{"match":{"path":{"regex":"(["}},` + action + `}}}`,
			"1 validation error detected: Value '([' at 'spec.httpRoute.match.path.regex' failed to satisfy constraint: Member must be a valid regular expression: error parsing regexp: missing closing ]: `[`"},
		{"bad header regex", "CreateRouteInput", `{` + route + `,"spec":{"http2Route":{"match":{"prefix":"/","headers":[{"name":"x","match":{"regex":"a{2,1}"}}]},` + action + `}}}`,
			"1 validation error detected: Value 'a{2,1}' at 'spec.http2Route.match.headers.1.member.match.regex' failed to satisfy constraint: Member must be a valid regular expression: error parsing regexp: invalid repeat count: `{2,1}`"},
		{"bad gRPC metadata regex", "CreateRouteInput", `{` + route + `,"spec":{"grpcRoute":{"match":{"serviceName":"s","metadata":[{"name":"x","match":{"regex":"*"}}]},` + action + `}}}`,
			"1 validation error detected: Value '*' at 'spec.grpcRoute.match.metadata.1.member.match.regex' failed to satisfy constraint: Member must be a valid regular expression: error parsing regexp: missing argument to repetition operator: `*`"},
		{"bad gateway route regex", "CreateGatewayRouteInput", `{` + gwr + `,"spec":{"httpRoute":{"match":{"path":{"regex":"(?<"}},` + target + `}}}`,
			"1 validation error detected: Value '(?<' at 'spec.httpRoute.match.path.regex' failed to satisfy constraint: Member must be a valid regular expression: error parsing regexp: invalid or unsupported Perl syntax: `(?<`"},
		{"bad gateway route header regex", "UpdateGatewayRouteInput", `{` + gwr + `,"spec":{"httpRoute":{"match":{"prefix":"/","headers":[{"name":"x","match":{"regex":"("}}]},` + target + `}}}`,
			"1 validation error detected: Value '(' at 'spec.httpRoute.match.headers.1.member.match.regex' failed to satisfy constraint: Member must be a valid regular expression: error parsing regexp: missing closing ): `(`"},
		{"bad gateway route gRPC metadata regex", "CreateGatewayRouteInput", `{` + gwr + `,"spec":{"grpcRoute":{"match":{"serviceName":"s","metadata":[{"name":"x","match":{"regex":"+"}}]},` + target + `}}}`,
			"1 validation error detected: Value '+' at 'spec.grpcRoute.match.metadata.1.member.match.regex' failed to satisfy constraint: Member must be a valid regular expression: error parsing regexp: missing argument to repetition operator: `+`"},
		{"a bad exact match is no regex", "CreateRouteInput", `{` + route + `,"spec":{"httpRoute":{"match":{"prefix":"/","headers":[{"name":"x","match":{"exact":"(["}}]},` + action + `}}}`, ""},
		{"hostname", "CreateVirtualNodeInput", `{` + node + `,"spec":{"serviceDiscovery":{"dns":{"hostname":"web.local"}}}}`, ""},
		{"empty hostname", "CreateVirtualNodeInput", `{` + node + `,"spec":{"serviceDiscovery":{"dns":{"hostname":""}}}}`,
			"1 validation error detected: Value '' at 'spec.serviceDiscovery.dns.hostname' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{"hostname with a NUL", "UpdateVirtualNodeInput", `{` + node + `,"spec":{"serviceDiscovery":{"dns":{"hostname":"a\u0000b"}}}}`,
			"1 validation error detected: Value 'a\x00b' at 'spec.serviceDiscovery.dns.hostname' failed to satisfy constraint: Member must not contain control characters"},
		{"backend", "CreateVirtualNodeInput", `{` + node + `,"spec":{"backends":[{"virtualService":{"virtualServiceName":"web.local"}}]}}`, ""},
		{"backend with a CR", "CreateVirtualNodeInput", `{` + node + `,"spec":{"backends":[{"virtualService":{"virtualServiceName":"web.local"}},{"virtualService":{"virtualServiceName":"web\rlocal"}}]}}`,
			"1 validation error detected: Value 'web\rlocal' at 'spec.backends.2.member.virtualService.virtualServiceName' failed to satisfy constraint: Member must not contain control characters"},
		{"empty backend", "CreateVirtualNodeInput", `{` + node + `,"spec":{"backends":[{"virtualService":{"virtualServiceName":""}}]}}`,
			"1 validation error detected: Value '' at 'spec.backends.1.member.virtualService.virtualServiceName' failed to satisfy constraint: Member must have length between 1 and 255"},
		{"backend of 256 characters", "CreateVirtualNodeInput", `{` + node + `,"spec":{"backends":[{"virtualService":{"virtualServiceName":"` + strings.Repeat("a", 256) + `"}}]}}`,
			"1 validation error detected: Value '" + strings.Repeat("a", 256) + "' at 'spec.backends.1.member.virtualService.virtualServiceName' failed to satisfy constraint: Member must have length between 1 and 255"},
		{"two rules broken", "CreateVirtualNodeInput",
			`{` + node + `,"spec":{"serviceDiscovery":{"dns":{"hostname":""}},"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"idle":{"unit":"s","value":315576000001}}}}]}}`,
			"2 validation errors detected: Value '315576000001' at 'spec.listeners.1.member.timeout.http.idle.value' failed to satisfy constraint: Member must have value less than or equal to 315576000000 (s); " +
				"Value '' at 'spec.serviceDiscovery.dns.hostname' failed to satisfy constraint: Member must have length greater than or equal to 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := json.NewDecoder(strings.NewReader(c.doc))
			d.UseNumber()
			var doc any
			if err := d.Decode(&doc); err != nil {
				t.Fatal(err)
			}
			vs := Model().Validate(c.shape, doc)
			switch msg := shape.Message(vs); {
			case c.want == "" && len(vs) > 0:
				t.Fatalf("refused: %s", msg)
			case c.want != "" && len(vs) == 0:
				t.Fatal("accepted")
			case c.want != "" && msg != c.want:
				t.Fatalf("message\n %q, want\n %q", msg, c.want)
			}
		})
	}
}

// TestChecksCoverTheModel: every shape a check names is in the model (a
// renamed shape would leave its rule unchecked), and every structure with
// a regex member has a check.
func TestChecksCoverTheModel(t *testing.T) {
	m := Model()
	for name := range m.Checks {
		if m.Shapes[name] == nil {
			t.Errorf("a check names %s, which is not in the model", name)
		}
	}
	var withRegex []string
	for name, s := range m.Shapes {
		if _, ok := s.Member("regex"); ok && s.Kind == shape.Structure {
			withRegex = append(withRegex, name)
			if m.Checks[name] == nil {
				t.Errorf("%s has a regex member and no check", name)
			}
		}
	}
	if len(withRegex) == 0 {
		t.Fatal("no structure of the model has a regex member")
	}
	slices.Sort(withRegex)
	t.Logf("structures with a regex member: %v", withRegex)
}

// TestCheckServiceName: a virtual service's name is held to the rule a
// backend's is, in the model's phrasing.
func TestCheckServiceName(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"web.local", ""},
		{"", "1 validation error detected: Value '' at 'virtualServiceName' failed to satisfy constraint: Member must have length between 1 and 255"},
		{strings.Repeat("a", 256), "Member must have length between 1 and 255"},
		{"a b\n", "1 validation error detected: Value 'a b\n' at 'virtualServiceName' failed to satisfy constraint: Member must not contain control characters"},
	} {
		err := CheckServiceName("virtualServiceName", c.name)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q refused: %v", c.name, err)
		case c.want != "" && err == nil:
			t.Errorf("%q accepted", c.name)
		case c.want != "" && !strings.Contains(err.Error(), c.want):
			t.Errorf("%q: %v, want it to hold %q", c.name, err, c.want)
		}
	}
}

// TestCheckStored: a stored route or gateway route is held to the rules
// of checks alone, not to the model's constraints, which it met when it
// was written (a model that later bounds a name must not take it off the
// proxies).
func TestCheckStored(t *testing.T) {
	const md = `"metadata":{"arn":"x","createdAt":1,"lastUpdatedAt":1,"meshOwner":"1","resourceOwner":"1","uid":"u","version":1},"status":{"status":"ACTIVE"}`
	cases := []struct {
		name, shape, value string
		want               string // "" when served
	}{
		{"route with a good regex", "RouteData",
			`{"meshName":"m","virtualRouterName":"r","routeName":"x",` + md + `,"spec":{"httpRoute":{"match":{"path":{"regex":"^/a+$"}},"action":{"weightedTargets":[{"virtualNode":"n","weight":1}]}}}}`, ""},
		{"route breaking only the model", "RouteData",
			`{"meshName":"","virtualRouterName":"r","routeName":"x",` + md + `,"spec":{"priority":5000,"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[]}}}}`, ""},
		{"route path regex", "RouteData",
			`{"meshName":"m","virtualRouterName":"r","routeName":"x",` + md + `,"spec":{"httpRoute":{"match":{"path":{"regex":"(a"}},"action":{"weightedTargets":[{"virtualNode":"n","weight":1}]}}}}`,
			"at 'spec.httpRoute.match.path.regex' failed to satisfy constraint: Member must be a valid regular expression"},
		{"route header regex", "RouteData",
			`{"meshName":"m","virtualRouterName":"r","routeName":"x",` + md + `,"spec":{"http2Route":{"match":{"prefix":"/","headers":[{"name":"h","match":{"regex":"[z-a]"}}]},"action":{"weightedTargets":[{"virtualNode":"n","weight":1}]}}}}`,
			"at 'spec.http2Route.match.headers.1.member.match.regex'"},
		{"gateway route path regex", "GatewayRouteData",
			`{"meshName":"m","virtualGatewayName":"g","gatewayRouteName":"x",` + md + `,"spec":{"httpRoute":{"match":{"path":{"regex":"*"}},"action":{"target":{"virtualService":{"virtualServiceName":"s"}}}}}}`,
			"at 'spec.httpRoute.match.path.regex'"},
		{"not JSON", "RouteData", `{"meshName":`, "decode RouteData"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckStored(tc.shape, []byte(tc.value))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("served, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("%v, want it to hold %q", err, tc.want)
			}
		})
	}
}

// BenchmarkCheckStored is the xDS server's cost of a route write's rules
// check (once per route version it reads): an HTTP route with a header
// match and two targets, as the API stores it.
func BenchmarkCheckStored(b *testing.B) {
	v := []byte(`{"meshName":"m","virtualRouterName":"r","routeName":"split","metadata":{"arn":"arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualRouter/r/route/split","createdAt":1,"lastUpdatedAt":1,"meshOwner":"111122223333","resourceOwner":"111122223333","uid":"u","version":1},"status":{"status":"ACTIVE"},` +
		`"spec":{"httpRoute":{"match":{"prefix":"/","headers":[{"name":"x-canary","match":{"regex":"^(yes|true)$"}}]},"action":{"weightedTargets":[{"virtualNode":"a","weight":90},{"virtualNode":"b","weight":10}]}}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckStored("RouteData", v); err != nil {
			b.Fatal(err)
		}
	}
}
