package cluster

import (
	"fmt"
	"log/slog"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestH2WindowsBuild: a cluster's initial_stream_window_size and
// initial_connection_window_size, from typed_extension_protocol_options
// or the deprecated http2_protocol_options, are taken within Envoy's
// range, [65535, 2147483647] (protocol.proto's validate rules), and
// refused (the cluster NACKed) outside it; each unset is zero (the
// loops' default, x/net's on the goroutine path: H2Windows). weft took any value and
// gave the upstream its own windows.
func TestH2WindowsBuild(t *testing.T) {
	const key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	const typedPath = "cluster c.typed_extension_protocol_options[" + key + "].explicit_http_config.http2_protocol_options"
	for _, tc := range []struct {
		name         string
		stream, conn *wrapperspb.UInt32Value
		want         route.H2Windows
		err          string
	}{
		{name: "unset"},
		{name: "the least", stream: wrapperspb.UInt32(65535), conn: wrapperspb.UInt32(65535), want: route.H2Windows{Stream: 65535, Conn: 65535}},
		{name: "the most", stream: wrapperspb.UInt32(1<<31 - 1), conn: wrapperspb.UInt32(1<<31 - 1), want: route.H2Windows{Stream: 1<<31 - 1, Conn: 1<<31 - 1}},
		{name: "stream alone", stream: wrapperspb.UInt32(70000), want: route.H2Windows{Stream: 70000}},
		{name: "connection alone", conn: wrapperspb.UInt32(9 << 20), want: route.H2Windows{Conn: 9 << 20}},
		{name: "stream under", stream: wrapperspb.UInt32(65534), err: "initial_stream_window_size: 65534 is outside [65535, 2147483647]"},
		{name: "stream over", stream: wrapperspb.UInt32(1 << 31), err: "initial_stream_window_size: 2147483648 is outside [65535, 2147483647]"},
		{name: "connection under", conn: wrapperspb.UInt32(0), err: "initial_connection_window_size: 0 is outside [65535, 2147483647]"},
		{name: "connection over", conn: wrapperspb.UInt32(1<<32 - 1), err: "initial_connection_window_size: 4294967295 is outside [65535, 2147483647]"},
	} {
		o := &corev3.Http2ProtocolOptions{InitialStreamWindowSize: tc.stream, InitialConnectionWindowSize: tc.conn}
		for _, where := range []struct {
			name, path string
			set        func(*clusterv3.Cluster)
		}{
			{"typed", typedPath, func(pb *clusterv3.Cluster) {
				a, err := anypb.New(&httpv3.HttpProtocolOptions{
					UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: o}}}})
				if err != nil {
					t.Fatal(err)
				}
				pb.TypedExtensionProtocolOptions = map[string]*anypb.Any{key: a}
			}},
			{"deprecated", "cluster c.http2_protocol_options", func(pb *clusterv3.Cluster) { pb.Http2ProtocolOptions = o }},
		} {
			t.Run(tc.name+", "+where.name, func(t *testing.T) {
				pb := &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
					LoadAssignment: assignmentOf("c", "127.0.0.1:80")}
				where.set(pb)
				c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
				if tc.err != "" {
					if want := where.path + "." + tc.err; fmt.Sprint(err) != want {
						t.Fatalf("Build: %v, want %s", err, want)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !c.HTTP2 || c.H2Windows != tc.want {
					t.Errorf("HTTP2 %v, windows %+v; want HTTP/2, %+v", c.HTTP2, c.H2Windows, tc.want)
				}
			})
		}
	}
}
