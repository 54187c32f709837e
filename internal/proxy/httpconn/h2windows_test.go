package httpconn

import (
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestH2WindowsBuild: http2_protocol_options' initial_stream_window_size
// and initial_connection_window_size are the windows clients get
// (H2Windows), within Envoy's range, [65535, 2147483647]; outside it the
// connection manager is NACKed. Unset, weft's defaults, 1 MiB and 4 MiB.
func TestH2WindowsBuild(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opts         bool
		stream, conn *wrapperspb.UInt32Value
		want         route.H2Windows
		err          string
	}{
		{name: "no options", want: route.DefaultH2Windows},
		{name: "unset", opts: true, want: route.DefaultH2Windows},
		{name: "set", opts: true, stream: wrapperspb.UInt32(65535), conn: wrapperspb.UInt32(1<<31 - 1), want: route.H2Windows{Stream: 65535, Conn: 1<<31 - 1}},
		{name: "stream alone", opts: true, stream: wrapperspb.UInt32(64 << 10), want: route.H2Windows{Stream: 64 << 10, Conn: 4 << 20}},
		{name: "stream under", opts: true, stream: wrapperspb.UInt32(65534), err: "hcm.http2_protocol_options.initial_stream_window_size: 65534 is outside [65535, 2147483647]"},
		{name: "connection over", opts: true, conn: wrapperspb.UInt32(1 << 31), err: "hcm.http2_protocol_options.initial_connection_window_size: 2147483648 is outside [65535, 2147483647]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &hcmv3.HttpConnectionManager{StatPrefix: "p",
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}},
				HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}}}
			if tc.opts {
				h.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{InitialStreamWindowSize: tc.stream, InitialConnectionWindowSize: tc.conn}
			}
			m, err := Build(h, "hcm", Deps{Stats: stats.NewStore()})
			if tc.err != "" {
				if fmt.Sprint(err) != tc.err {
					t.Fatalf("err %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.H2Windows(); got != tc.want {
				t.Errorf("windows %+v, want %+v", got, tc.want)
			}
		})
	}
}
