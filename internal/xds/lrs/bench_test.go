package lrs

import (
	"fmt"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// filled returns a server holding reporters streams of a mesh, each with
// clusters clusters and a window of reports.
func filled(b *testing.B, c *clock, reporters, clusters int) *Server {
	s := newServer(c, nil, Limits{})
	cs := make([]*endpointv3.ClusterStats, clusters)
	for i := range cs {
		cs[i] = cluster(fmt.Sprintf("cds_egress_m_n%d_http_8080", i), 100, 99, 1, 2)
	}
	for i := range reporters {
		r, err := s.attach(translate.Identity{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: fmt.Sprintf("src%d", i%100)})
		if err != nil {
			b.Fatal(err)
		}
		for range 6 { // a 30 s window at 5 s
			s.record(r, cs, c.now())
		}
	}
	return s
}

// BenchmarkRecord: one report of 20 clusters into a server holding 1,000
// streams.
func BenchmarkRecord(b *testing.B) {
	c := &clock{t: time.Now()}
	s := filled(b, c, 1000, 20)
	r, _ := s.attach(translate.Identity{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "front"})
	cs := make([]*endpointv3.ClusterStats, 20)
	for i := range cs {
		cs[i] = cluster(fmt.Sprintf("cds_egress_m_n%d_http_8080", i), 100, 99, 1, 2)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.record(r, cs, c.now())
	}
}

// BenchmarkTraffic: GET /v1/traffic's computation over 1,000 streams of
// 20 clusters, 6 reports each (120,000 samples).
func BenchmarkTraffic(b *testing.B) {
	c := &clock{t: time.Now()}
	s := filled(b, c, 1000, 20)
	b.ReportAllocs()
	for b.Loop() {
		if len(s.Traffic(owner, "m")) != 2000 {
			b.Fatal("edges")
		}
	}
}
