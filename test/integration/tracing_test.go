package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/server"
	"github.com/weftmesh/weft/internal/xds/translate"
)

type spanSink struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string][]*tracepb.Span // by service.name
}

func (s *spanSink) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				svc = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			s.spans[svc] = append(s.spans[svc], ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// TestMeshWideTracingFromServerFlags: weft server --proxy-tracing gives a
// weft proxy that has no tracing settings of its own its tracer over xDS.
func TestMeshWideTracingFromServerFlags(t *testing.T) {
	needNamespace(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := &spanSink{spans: map[string][]*tracepb.Span{}}
	g := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(g, sink)
	go func() { _ = g.Serve(ln) }() // ends with g.Stop in Cleanup
	t.Cleanup(g.Stop)

	w := startServerWith(t, server.Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DataDir: t.TempDir(), Region: "us-east-1",
		AccountID: "111122223333", ProxyTracing: &translate.MeshTracing{Exporter: "otlp-grpc", Endpoint: ln.Addr().String(), SampleRate: 1}})
	ctx := t.Context()
	if _, err := w.mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("red"),
		Spec: &types.VirtualNodeSpec{
			Listeners:        []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8081), Protocol: types.PortProtocolHttp}}},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String("red.m.local")}},
		}}); err != nil {
		t.Fatal(err)
	}
	serveApp(t, "127.0.0.1:8081", "red")
	startProxy(t, w, "mesh/m/virtualNode/red")
	const ingress = "127.0.0.3:8081"
	redirect(t, ingress, 15000)
	traceID := "6bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodGet, "http://"+ingress+"/", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("through the sidecar: %s", resp.Status)
	}
	tid, _ := hex.DecodeString(traceID)
	waitUntil(t, 20*time.Second, "the sidecar's span at the collector", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, s := range sink.spans["m/red"] {
			if bytes.Equal(s.GetTraceId(), tid) && s.GetName() == "ingress" {
				return true
			}
		}
		return false
	})
}
