package stats

import (
	"bytes"
	"strings"
	"testing"
)

func TestFormats(t *testing.T) {
	s := NewStore()
	c := s.Scope("cluster.cds_egress_m_red_http_80.", "envoy_cluster_", Label{"envoy_cluster_name", "cds_egress_m_red_http_80"})
	c.Counter("upstream_rq_total").Add(3)
	c.TaggedCounter("upstream_rq_503", "upstream_rq", Label{"envoy_response_code", "503"}).Inc()
	s.Scope("control_plane.", "envoy_control_plane_").Gauge("connected_state").Set(1)
	var text, prom bytes.Buffer
	_ = s.WriteText(&text, nil, false)
	_ = s.WritePrometheus(&prom, nil, false)
	wantText := "cluster.cds_egress_m_red_http_80.upstream_rq_503: 1\ncluster.cds_egress_m_red_http_80.upstream_rq_total: 3\ncontrol_plane.connected_state: 1\n"
	if text.String() != wantText {
		t.Errorf("text:\n%s", text.String())
	}
	for _, want := range []string{
		"# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"cds_egress_m_red_http_80\"} 1\n",
		"envoy_cluster_upstream_rq_total{envoy_cluster_name=\"cds_egress_m_red_http_80\"} 3\n",
		"# TYPE envoy_control_plane_connected_state gauge\nenvoy_control_plane_connected_state 1\n",
	} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("prometheus lacks %q:\n%s", want, prom.String())
		}
	}
}
