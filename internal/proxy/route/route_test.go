package route

import (
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func to(cluster, prefix string) *routev3.Route {
	return &routev3.Route{Name: cluster, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

func TestVirtualHostPrecedence(t *testing.T) {
	rc, err := Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{to("any", "/")}},
		{Name: "suffix", Domains: []string{"*.colors.local"}, Routes: []*routev3.Route{to("suffix", "/")}},
		{Name: "longer", Domains: []string{"*.red.colors.local"}, Routes: []*routev3.Route{to("longer", "/")}},
		{Name: "prefix", Domains: []string{"red.*"}, Routes: []*routev3.Route{to("prefix", "/")}},
		{Name: "exact", Domains: []string{"red.colors.local", "red.colors.local:8080"}, Routes: []*routev3.Route{to("exact", "/")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"red.colors.local": "exact", "RED.colors.local:8080": "exact", "x.red.colors.local": "longer",
		"blue.colors.local": "suffix", "red.example": "prefix", "other": "any", "red.colors.local:9090": "prefix",
	} {
		if got := rc.VirtualHost(host).Name; got != want {
			t.Errorf("%s: %s, want %s", host, got, want)
		}
	}
}

func TestCompileRejects(t *testing.T) {
	ok := func() *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{to("c", "/")}}}}
	}
	cases := []struct {
		name string
		mut  func(*routev3.RouteConfiguration)
		want string
	}{
		{"bad regex", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}
		}, "invalid regex"},
		{"weights sum to zero", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}}}}
		}, "sum to 0"},
		{"total weight mismatch", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(60)}}, TotalWeight: wrapperspb.UInt32(100)}}
		}, "total_weight 100"},
		{"unknown retry condition", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,sometimes"}
		}, "sometimes"},
		{"redirect action", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}}
		}, "field redirect is not supported"},
		{"hash policy", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{}}
		}, "field hash_policy is not supported"},
		{"duplicate domain", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "w", Domains: []string{"*"}})
		}, "also in virtual host"},
		// Envoy's HeaderParser refuses mutations of pseudo-headers and
		// host, at every level, requests and responses alike.
		{"host added", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "Host", Value: "x"}}}
		}, "host Host cannot be added"},
		{"pseudo-header added to responses", func(rc *routev3.RouteConfiguration) {
			rc.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ":status", Value: "200"}}}
		}, "response_headers_to_add[0]: pseudo-header or host :status cannot be added"},
		{"host removed", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].RequestHeadersToRemove = []string{"x-a", "HOST"}
		}, "request_headers_to_remove[1]: pseudo-header or host HOST cannot be removed"},
		{"pseudo-header removed", func(rc *routev3.RouteConfiguration) {
			rc.RequestHeadersToRemove = []string{":authority"}
		}, "pseudo-header or host :authority cannot be removed"},
		{"pseudo-header removed from responses", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].ResponseHeadersToRemove = []string{":status"}
		}, "pseudo-header or host :status cannot be removed"},
		// Envoy's proto validation refuses a mutation's header name or
		// value with a NUL, CR or LF (which would end the line of an
		// HTTP/1.1 upstream request and start another), and an empty
		// name.
		{"CR LF in a value", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "a\r\nx-b: 1"}}}
		}, `request_headers_to_add[0].header.value: header value "a\r\nx-b: 1" has a NUL, CR or LF`},
		{"LF in a value", func(rc *routev3.RouteConfiguration) {
			rc.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "a\nb"}}}
		}, "response_headers_to_add[0].header.value"},
		{"NUL in a name", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a\x00", Value: "a"}}}
		}, "request_headers_to_add[0].header.key"},
		{"empty name", func(rc *routev3.RouteConfiguration) {
			rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Value: "a"}}}
		}, "empty header name"},
		{"CR in a name removed", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].RequestHeadersToRemove = []string{"x-a", "x-b\r"}
		}, "request_headers_to_remove[1]: header name"},
		{"empty name removed", func(rc *routev3.RouteConfiguration) {
			rc.ResponseHeadersToRemove = []string{""}
		}, "response_headers_to_remove[0]: empty header name"},
		{"value over 16 KiB", func(rc *routev3.RouteConfiguration) {
			rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: strings.Repeat("a", 16385)}}}
		}, "over 16384"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := ok()
			tc.mut(rc)
			_, err := Compile(rc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRewrites(t *testing.T) {
	r := to("c", "/gw/")
	r.GetRoute().PrefixRewrite = "/"
	re := to("c", "/v1/")
	re.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/v1/(.*)$"}, Substitution: `/api/\1`}
	rc, err := Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{r, re}}}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/gw/": "/", "/gw/a/b": "/a/b", "/v1/items": "/api/items"} {
		req := httptest.NewRequest("GET", "http://x"+path, nil)
		_, rt := rc.Match(req, path)
		if rt == nil {
			t.Fatalf("%s: no route", path)
		}
		if got := rt.RewritePath(path); got != want {
			t.Errorf("%s rewrote to %s, want %s", path, got, want)
		}
	}
}

func TestIsGRPC(t *testing.T) {
	for ct, want := range map[string]bool{"application/grpc": true, "application/grpc+proto": true, "application/grpc+": true,
		"application/grpc-web": false, "application/grpc-web+proto": false, "application/grpc;charset=utf-8": false,
		"": false, "application/gr": false, "Application/grpc": false, "text/plain": false, " application/grpc": false} {
		if IsGRPC(ct) != want || IsGRPC([]byte(ct)) != want {
			t.Errorf("IsGRPC(%q) = %v, want %v", ct, !want, want)
		}
	}
}

func TestGRPCStatus(t *testing.T) {
	for v, want := range map[string]int{"": NoGRPCStatus, "0": 0, "14": 14, "16": 16, "+13": 13, " 4 ": 4, "\t2": 2,
		"17": InvalidGRPCStatus, "99999999999999999999999": InvalidGRPCStatus, "-1": InvalidGRPCStatus, "x": InvalidGRPCStatus,
		" ": InvalidGRPCStatus, "+": InvalidGRPCStatus, "1 4": InvalidGRPCStatus, "0x1": InvalidGRPCStatus} {
		if got, gotB := GRPCStatus(v), GRPCStatus([]byte(v)); got != want || gotB != want {
			t.Errorf("GRPCStatus(%q) = %d, %d; want %d", v, got, gotB, want)
		}
	}
}

// TestHTTPStatusForGRPC: Envoy's Grpc::Utility::grpcToHttpStatus, status
// by status.
func TestHTTPStatusForGRPC(t *testing.T) {
	want := []int{200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401, 500}
	for s, w := range want {
		if got := HTTPStatusForGRPC(s); got != w {
			t.Errorf("HTTPStatusForGRPC(%d) = %d, want %d", s, got, w)
		}
	}
}
