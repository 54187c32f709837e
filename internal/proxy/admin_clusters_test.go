package proxy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// TestClustersLocality: /clusters shows each host's EDS locality, as
// Envoy's does (ClustersHandler: host::region::, ::zone::, ::sub_zone::
// lines; in JSON, host_statuses' locality), the localities the load
// report groups hosts by. It showed them empty for every host.
func TestClustersLocality(t *testing.T) {
	h := newHarness(t)
	east, west := "127.0.0.1:1001", "127.0.0.1:1002"
	two := &endpointv3.ClusterLoadAssignment{ClusterName: "two", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Region: "us-east-1", Zone: "us-east-1a"}, LbEndpoints: cla("two", east).GetEndpoints()[0].GetLbEndpoints()},
		{Locality: &corev3.Locality{Region: "us-west-2", Zone: "us-west-2b", SubZone: "rack1"}, LbEndpoints: cla("two", west).GetEndpoints()[0].GetLbEndpoints()}}}
	h.push(edsCluster("two"), two)
	waitUntil(t, 5*time.Second, "both hosts", func() bool { c := h.p.clusters.Get("two"); return c != nil && len(c.Hosts()) == 2 })
	text := h.admin("/clusters")
	for _, want := range []string{
		"two::" + east + "::region::us-east-1", "two::" + east + "::zone::us-east-1a", "two::" + east + "::sub_zone::",
		"two::" + west + "::region::us-west-2", "two::" + west + "::zone::us-west-2b", "two::" + west + "::sub_zone::rack1",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/clusters lacks %q:\n%s", want, text)
		}
	}
	var got struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Address  string            `json:"address"`
				Locality map[string]string `json:"locality"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	page := h.admin("/clusters?format=json")
	if err := json.Unmarshal([]byte(page), &got); err != nil {
		t.Fatalf("/clusters?format=json: %v\n%s", err, page)
	}
	locs := map[string]map[string]string{}
	for _, c := range got.ClusterStatuses {
		for _, hs := range c.HostStatuses {
			if c.Name == "two" {
				locs[hs.Address] = hs.Locality
			}
		}
	}
	if e, w := locs[east], locs[west]; len(e) != 2 || e["region"] != "us-east-1" || e["zone"] != "us-east-1a" ||
		len(w) != 3 || w["region"] != "us-west-2" || w["zone"] != "us-west-2b" || w["sub_zone"] != "rack1" {
		t.Errorf("/clusters?format=json localities %v; want east's region and zone, west's region, zone and sub_zone:\n%s", locs, page)
	}
}
