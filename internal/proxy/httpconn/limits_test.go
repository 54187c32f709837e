package httpconn

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestBuildHeadLimits: max_request_headers_kb and
// common_http_protocol_options.max_headers_count are read, within Envoy's
// ranges (the fields' validation rules: kb in [1, 8192], count at least
// 1); out of range, the connection manager is NACKed. Unset, Envoy's
// defaults apply.
func TestBuildHeadLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		kb, count  *wrapperspb.UInt32Value
		bytes, max int
		err        string
	}{
		{name: "unset", bytes: 60 << 10, max: 100},
		{name: "set", kb: wrapperspb.UInt32(8192), count: wrapperspb.UInt32(7), bytes: 8192 << 10, max: 7},
		{name: "kb 0", kb: wrapperspb.UInt32(0), err: "max_request_headers_kb: 0 is outside [1, 8192]"},
		{name: "kb 8193", kb: wrapperspb.UInt32(8193), err: "max_request_headers_kb: 8193 is outside [1, 8192]"},
		{name: "count 0", count: wrapperspb.UInt32(0), err: "max_headers_count: 0 is below 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &hcmv3.HttpConnectionManager{StatPrefix: "p", MaxRequestHeadersKb: tc.kb,
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}},
				HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}}}
			if tc.count != nil {
				h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: tc.count}
			}
			m, err := Build(h, "hcm", Deps{Stats: stats.NewStore()})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := m.Limits(); l.Bytes() != tc.bytes || l.Lines() != tc.max {
				t.Errorf("limits %d bytes, %d lines; want %d, %d", l.Bytes(), l.Lines(), tc.bytes, tc.max)
			}
			// The largest HPACK size of a list within both limits.
			if _, list := m.H2Limits(); list != uint32(tc.bytes+32*tc.max) {
				t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d, want %d", list, tc.bytes+32*tc.max)
			}
		})
	}
}
