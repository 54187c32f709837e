package translate

import (
	"testing"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
)

func TestMeshTracingFillsEveryTracingBlock(t *testing.T) {
	v, owner := replay(t, "testdata/tutorial")
	for _, id := range []Identity{
		{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualNode, Name: "red"},
		{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualGateway, Name: "color-gateway"},
	} {
		for _, mt := range []*MeshTracing{
			{Exporter: "otlp-grpc", Endpoint: "collector.example:4317", SampleRate: 0.01},
			{Exporter: "otlp-http", Endpoint: "http://collector.example:4318/v1/traces", SampleRate: 1},
			{Exporter: "xray", Endpoint: "127.0.0.1:2000", SampleRate: 0.05},
		} {
			if err := mt.Validate(); err != nil {
				t.Fatal(err)
			}
			m := NewMemo()
			plain, err := TranslateWith(v, id, m)
			if err != nil {
				t.Fatal(err)
			}
			before := proto.Clone(plain.Listeners[0])
			r, err := TranslateWithTracing(mt)(v, id, m)
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(r); err != nil {
				t.Fatalf("%s %s: %v", id.Name, mt.Exporter, err)
			}
			if !proto.Equal(before, plain.Listeners[0]) {
				t.Errorf("the shared translation was changed in place")
			}
			n := 0
			for _, l := range r.Listeners {
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						if f.GetTypedConfig().GetTypeUrl() != hcmTypeURL {
							continue
						}
						var h hcmv3.HttpConnectionManager
						if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
							t.Fatal(err)
						}
						tr := h.GetTracing()
						if tr == nil {
							continue
						}
						n++
						if got := tr.GetRandomSampling().GetValue(); got != mt.SampleRate*100 {
							t.Errorf("%s: random_sampling %v", l.GetName(), got)
						}
						switch mt.Exporter {
						case "xray":
							var xc tracev3.XRayConfig
							if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(&xc); err != nil || xc.GetSegmentName() != "color-mesh/"+id.Name {
								t.Errorf("%s: xray provider %v (%v)", l.GetName(), &xc, err)
							}
						default:
							var oc tracev3.OpenTelemetryConfig
							if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(&oc); err != nil || oc.GetServiceName() != "color-mesh/"+id.Name {
								t.Errorf("%s: otel provider %v (%v)", l.GetName(), &oc, err)
							}
						}
					}
				}
			}
			if n == 0 {
				t.Errorf("%s %s: no connection manager got the tracer", id.Name, mt.Exporter)
			}
		}
	}
	for _, bad := range []MeshTracing{{Exporter: "zipkin", Endpoint: "x:1"}, {Exporter: "otlp-http", Endpoint: "x:4318"},
		{Exporter: "xray", Endpoint: "daemon:2000"}, {Exporter: "otlp-grpc", Endpoint: "x:1", SampleRate: 2}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
}
