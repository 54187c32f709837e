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

func TestHistogramBuckets(t *testing.T) {
	// Every default bound must be a bin bound, so buckets are exact.
	for _, b := range DefaultBuckets {
		if b < 1 {
			continue
		}
		i := binOf(uint64(b))
		if binUpper(i) != b {
			t.Errorf("bound %v falls inside bin %d (upper %v)", b, i, binUpper(i))
		}
	}
	for _, v := range []uint64{0, 1, 99, 100, 101, 109, 110, 111, 999, 1000, 1001, 3600000, 99999999, 100000000} {
		i := binOf(v)
		if float64(v) > binUpper(i) || float64(v) <= binLower(i) && v != 0 {
			t.Errorf("value %d in bin %d (%v, %v]", v, i, binLower(i), binUpper(i))
		}
	}
	if binOf(1e9) != overflow {
		t.Errorf("1e9 not in the overflow bin")
	}
	s := NewStore()
	h := s.Scope("cluster.c.", "envoy_cluster_", Label{"envoy_cluster_name", "c"}).Histogram("upstream_rq_time")
	for v := uint64(1); v <= 100; v++ {
		h.Record(v)
	}
	h.Record(250)
	h.Record(251)
	snap, _ := s.HistogramValue("cluster.c.upstream_rq_time")
	b := snap.Buckets()
	want := map[float64]uint64{0.5: 0, 1: 1, 5: 5, 10: 10, 25: 25, 50: 50, 100: 100, 250: 101, 500: 102, 3600000: 102}
	for i, bound := range DefaultBuckets {
		if w, ok := want[bound]; ok && b[i] != w {
			t.Errorf("le=%v: %d, want %d", bound, b[i], w)
		}
	}
	if q, _ := snap.Quantile(0.5); q != 51 {
		t.Errorf("p50 = %v, want 51", q)
	}
	if q, _ := snap.Quantile(0); q != 1 {
		t.Errorf("p0 = %v, want 1", q)
	}
	if q, _ := snap.Quantile(1); q < 251 || q > 260 {
		t.Errorf("p100 = %v, want within (250, 260]", q)
	}
	var text, prom bytes.Buffer
	_ = s.WriteText(&text, nil, false)
	if !strings.HasPrefix(text.String(), "cluster.c.upstream_rq_time: P0(nan,1) P25(nan,26) P50(nan,51) P75(nan,77) P90(nan,92)") {
		t.Errorf("text:\n%s", text.String())
	}
	_ = s.WritePrometheus(&prom, nil, false)
	for _, want := range []string{
		"# TYPE envoy_cluster_upstream_rq_time histogram\n",
		"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"0.5\"} 0\n",
		"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"250\"} 101\n",
		"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"+Inf\"} 102\n",
		"envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"c\"} 5551\n",
		"envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"c\"} 102\n",
	} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("prometheus lacks %q:\n%s", want, prom.String())
		}
	}
	empty := s.Scope("cluster.d.", "envoy_cluster_").Histogram("upstream_rq_time")
	_ = empty
	text.Reset()
	_ = s.WriteText(&text, nil, false)
	if !strings.Contains(text.String(), "cluster.d.upstream_rq_time: No recorded values\n") {
		t.Errorf("text:\n%s", text.String())
	}
}

func TestStatsTags(t *testing.T) {
	s := NewStoreWithTags(Label{"appmesh.mesh", "m"}, Label{"appmesh.virtual_node", "red"})
	s.Scope("cluster.c.", "envoy_cluster_", Label{"envoy_cluster_name", "c"}).Counter("upstream_rq_total").Inc()
	s.Scope("server.", "envoy_server_").Gauge("live").Set(1)
	var prom bytes.Buffer
	_ = s.WritePrometheus(&prom, nil, false)
	for _, want := range []string{
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="c",appmesh_mesh="m",appmesh_virtual_node="red"} 1`,
		`envoy_server_live{appmesh_mesh="m",appmesh_virtual_node="red"} 1`,
	} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("prometheus lacks %q:\n%s", want, prom.String())
		}
	}
}
