package proxy

import (
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRouting(t *testing.T) {
	h := newHarness(t)
	green, yellow, blue := newBackend(t, "green"), newBackend(t, "yellow"), newBackend(t, "blue")
	weighted := routeTo("/split", "")
	weighted.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "green", Weight: wrapperspb.UInt32(80)}, {Name: "yellow", Weight: wrapperspb.UInt32(20)}, {Name: "blue", Weight: wrapperspb.UInt32(0)}},
		TotalWeight: wrapperspb.UInt32(100)}}
	rewrite := routeTo("/gw/", "blue")
	rewrite.GetRoute().PrefixRewrite = "/"
	rewrite.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "blue.colors.local"}
	rewrite.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-app-mesh-virtual-service", Value: "blue.colors.local"}}}
	rewrite.ResponseHeadersToRemove = []string{"x-remove-me"}
	byHeader := routeTo("/", "yellow")
	byHeader.Match.Headers = []*routev3.HeaderMatcher{
		{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ye"}}}},
		{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "GET"}},
		{Name: "x-version", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 2, End: 5}}},
		{Name: "x-debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
	}
	byQuery := routeTo("/q", "blue")
	byQuery.Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "color",
		QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "blue"}}}}}
	regex := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/re/[0-9]+"}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "blue"}}}}
	exact := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "yellow"}}}}

	h.push(
		httpListener("egress", httpManager("egress", "rds_egress_http_8080")),
		routeConfig("rds_egress_http_8080",
			vhost("colors", []string{"colors.local", "colors.local:8080"}, weighted, rewrite, byQuery, regex, exact, byHeader, routeTo("/", "green")),
			vhost("any", []string{"*"}, routeTo("/", "blue"))),
		edsCluster("green"), edsCluster("yellow"), edsCluster("blue"),
		cla("green", green.addr()), cla("yellow", yellow.addr()), cla("blue", blue.addr()),
	)
	c := newClient(t)
	addr := h.addr("egress")

	n := map[string]int{}
	for i := 0; i < 500; i++ {
		_, e, _ := get(t, c, addr, "colors.local", "/split")
		n[e.Backend]++
	}
	if n["blue"] != 0 || n["green"] < 360 || n["green"] > 440 || n["green"]+n["yellow"] != 500 {
		t.Errorf("weighted 80/20/0 over 500 requests: %v", n)
	}

	cases := []struct {
		name, host, path string
		hdr              []string
		backend          string
		upPath, upHost   string
	}{
		{"prefix rewrite and host rewrite", "colors.local", "/gw/path?x=1", nil, "blue", "/path?x=1", "blue.colors.local"},
		{"host with port", "colors.local:8080", "/", nil, "green", "/", "colors.local:8080"},
		{"catch-all virtual host", "other.local", "/", nil, "blue", "/", "other.local"},
		{"header prefix, method and range match", "colors.local", "/x", []string{"x-canary", "yellow", "x-version", "3"}, "yellow", "/x", "colors.local"},
		{"range out of bounds", "colors.local", "/x", []string{"x-canary", "yellow", "x-version", "5"}, "green", "/x", "colors.local"},
		{"inverted presence", "colors.local", "/x", []string{"x-canary", "yellow", "x-version", "3", "x-debug", "1"}, "green", "/x", "colors.local"},
		{"query parameter", "colors.local", "/q?color=blue", nil, "blue", "/q?color=blue", "colors.local"},
		{"query parameter mismatch", "colors.local", "/q?color=red", nil, "green", "/q?color=red", "colors.local"},
		{"regex is anchored", "colors.local", "/re/123", nil, "blue", "/re/123", "colors.local"},
		{"regex no partial match", "colors.local", "/re/123/x", nil, "green", "/re/123/x", "colors.local"},
		{"exact path", "colors.local", "/exact", nil, "yellow", "/exact", "colors.local"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, e, body := get(t, c, addr, tc.host, tc.path, tc.hdr...)
			if resp.StatusCode != 200 || e.Backend != tc.backend || e.Path != tc.upPath || e.Host != tc.upHost {
				t.Fatalf("got %d %q path %q host %q, want %s %q %q (body %s)", resp.StatusCode, e.Backend, e.Path, e.Host, tc.backend, tc.upPath, tc.upHost, body)
			}
			if resp.Header.Get("Server") != "envoy" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
				t.Errorf("missing Envoy response headers: %v", resp.Header)
			}
			if e.Header.Get("X-Request-Id") == "" || e.Header.Get("X-Forwarded-Proto") != "http" {
				t.Errorf("upstream request lacks x-request-id / x-forwarded-proto: %v", e.Header)
			}
		})
	}
	t.Run("request and response header mutations", func(t *testing.T) {
		resp, e, _ := get(t, c, addr, "colors.local", "/gw/")
		if e.Header.Get("X-App-Mesh-Virtual-Service") != "blue.colors.local" {
			t.Errorf("request_headers_to_add not applied: %v", e.Header)
		}
		if e.Header.Get("X-Envoy-Original-Path") != "/gw/" {
			t.Errorf("x-envoy-original-path = %q", e.Header.Get("X-Envoy-Original-Path"))
		}
		if resp.Header.Get("X-Remove-Me") != "" || resp.Header.Get("X-Backend") != "blue" {
			t.Errorf("response_headers_to_remove not applied: %v", resp.Header)
		}
	})
	t.Run("no route is 404 NR", func(t *testing.T) {
		h.push(
			httpListener("egress", httpManager("egress", "rds_egress_http_8080")),
			routeConfig("rds_egress_http_8080", vhost("colors", []string{"colors.local"}, routeTo("/only", "green"))),
			edsCluster("green"), cla("green", green.addr()))
		resp, _, _ := get(t, c, addr, "colors.local", "/elsewhere")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
		if got := h.stat("http.egress.no_route"); got < 1 {
			t.Errorf("http.egress.no_route = %d", got)
		}
	})
	t.Run("unknown cluster is 503 NC", func(t *testing.T) {
		h.push(
			httpListener("egress", httpManager("egress", "rds_egress_http_8080")),
			routeConfig("rds_egress_http_8080", vhost("colors", []string{"colors.local"}, routeTo("/", "missing"))),
			edsCluster("green"), cla("green", green.addr()))
		resp, _, _ := get(t, c, addr, "colors.local", "/")
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
	})
	if !strings.Contains(h.admin("/stats"), "control_plane.connected_state: 1") {
		t.Error("/stats lacks control_plane.connected_state: 1")
	}
}

// TestNormalizedPathUpstream: with normalize_path and merge_slashes the
// route matches the normalized path and the upstream receives that path,
// not the raw one (which would let /x/../admin past a route for /admin
// to an upstream that resolves it differently).
func TestNormalizedPathUpstream(t *testing.T) {
	h := newHarness(t)
	admin, other := newBackend(t, "admin"), newBackend(t, "other")
	exact := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/admin"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "admin"}}}}
	h.push(
		httpListener("egress", httpManager("egress", "rds_egress_http_8080", func(m *hcmv3.HttpConnectionManager) {
			m.NormalizePath = wrapperspb.Bool(true)
			m.MergeSlashes = true
		})),
		routeConfig("rds_egress_http_8080", vhost("any", []string{"*"}, exact, routeTo("/", "other"))),
		staticCluster("admin", admin.addr()), staticCluster("other", other.addr()),
	)
	c := newClient(t)
	for _, tc := range []struct{ path, backend, upPath string }{
		{"/x/../admin", "admin", "/admin"},
		{"//admin", "admin", "/admin"},
		{"//a//b", "other", "/a/b"},
		{"/a/./b/", "other", "/a/b/"},
	} {
		resp, e, body := get(t, c, h.addr("egress"), "any.local", tc.path)
		if resp.StatusCode != 200 || e.Backend != tc.backend || e.Path != tc.upPath {
			t.Errorf("%s: %d %q path %q, want %s %q (body %s)", tc.path, resp.StatusCode, e.Backend, e.Path, tc.backend, tc.upPath, body)
		}
		if e.Header.Get("X-Envoy-Original-Path") != "" {
			t.Errorf("%s: x-envoy-original-path set without a rewrite", tc.path)
		}
	}
}
