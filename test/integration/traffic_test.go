package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
)

// traffic is GET /v1/traffic's body.
type traffic struct {
	Mesh          string    `json:"mesh"`
	WindowSeconds float64   `json:"windowSeconds"`
	GeneratedAt   time.Time `json:"generatedAt"`
	Edges         []struct {
		Source            struct{ Kind, Name string } `json:"source"`
		VirtualService    string                      `json:"virtualService"`
		Target            struct{ Kind, Name string } `json:"target"`
		RequestsPerSecond float64                     `json:"requestsPerSecond"`
		ErrorRatio        float64                     `json:"errorRatio"`
		P50Ms             *float64                    `json:"p50Ms"`
		P99Ms             *float64                    `json:"p99Ms"`
		LastReport        time.Time                   `json:"lastReport"`
	} `json:"edges"`
}

// TestTrafficSplit runs a 4:1 weighted route behind weft proxy and reads
// the split back from the control plane: the proxy's load reports reach
// GET /v1/traffic within 10 s at the default reporting interval, and the
// weft_traffic_* series on /metrics.
func TestTrafficSplit(t *testing.T) {
	needNamespace(t)
	w := startServer(t)
	ctx := t.Context()
	node := func(name, host string, backends ...string) {
		t.Helper()
		spec := &types.VirtualNodeSpec{
			Listeners:        []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String(host)}},
		}
		for _, b := range backends {
			spec.Backends = append(spec.Backends, &types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String(b)}})
		}
		if _, err := w.mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String(name), Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	node("red", "127.0.0.2")
	node("blue", "127.0.0.3")
	node("front", "127.0.0.4", "color.m.local")
	if _, err := w.mesh.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: aws.String("m"), VirtualRouterName: aws.String("colors"),
		Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mesh.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: aws.String("m"), VirtualRouterName: aws.String("colors"), RouteName: aws.String("split"),
		Spec: &types.RouteSpec{HttpRoute: &types.HttpRoute{Match: &types.HttpRouteMatch{Prefix: aws.String("/")},
			Action: &types.HttpRouteAction{WeightedTargets: []types.WeightedTarget{
				{VirtualNode: aws.String("red"), Weight: 4}, {VirtualNode: aws.String("blue"), Weight: 1}}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mesh.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: aws.String("m"), VirtualServiceName: aws.String("color.m.local"),
		Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String("colors")}}}}); err != nil {
		t.Fatal(err)
	}
	serveApp(t, "127.0.0.2:8080", "red")
	serveApp(t, "127.0.0.3:8080", "blue")
	startProxy(t, w, "mesh/m/virtualNode/front")
	// The front app dials the virtual service; iptables sends it to the
	// proxy's egress listener, as for a sidecar.
	const vip = "127.0.0.10:8080"
	redirect(t, vip, 15001)

	call := func() (string, error) {
		req, _ := http.NewRequest("GET", "http://"+vip+"/", nil)
		req.Host = "color.m.local:8080"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("%s: %s", resp.Status, b)
		}
		return string(b), err
	}
	// Both targets answer before the count starts: the proxy has both
	// clusters' endpoints.
	answered := map[string]bool{}
	waitUntil(t, 20*time.Second, "both targets through the proxy", func() bool {
		if got, err := call(); err == nil {
			answered[got] = true
		}
		return answered["red"] && answered["blue"]
	})
	counts := map[string]int{}
	const n = 500
	for range n {
		got, err := call()
		if err != nil {
			t.Fatal(err)
		}
		counts[got]++
	}
	share := float64(counts["red"]) / float64(counts["red"]+counts["blue"])
	t.Logf("answers: %v (red share %.3f)", counts, share)
	if share < 0.7 || share > 0.9 {
		t.Fatalf("red answered %.3f of requests; the route says 0.8", share)
	}

	// Within 10 s of the last request (the default interval is 5 s), the
	// control plane has both edges, in the same proportion.
	var last traffic
	start := time.Now()
	waitUntil(t, 10*time.Second, "the split in /v1/traffic", func() bool {
		last = getTraffic(t, w, "m")
		rps := map[string]float64{}
		for _, e := range last.Edges {
			if e.Source.Kind != "virtualNode" || e.Source.Name != "front" || e.VirtualService != "color.m.local" || e.Target.Kind != "virtualNode" || e.ErrorRatio > 0.05 {
				return false
			}
			rps[e.Target.Name] = e.RequestsPerSecond
		}
		// The first 20 s of warm-up calls went to both too; the rates
		// are over the stream's time, the same for both edges.
		return len(rps) == 2 && rps["red"] > 0 && math.Abs(rps["red"]/(rps["red"]+rps["blue"])-share) < 0.02
	})
	t.Logf("/v1/traffic after %v: %+v", time.Since(start).Round(100*time.Millisecond), last)
	if last.WindowSeconds != 30 || last.Mesh != "m" || time.Since(last.GeneratedAt) > time.Minute {
		t.Errorf("window %v, mesh %q, generated at %v", last.WindowSeconds, last.Mesh, last.GeneratedAt)
	}
	// Latency comes from the proxy's upstream_rq_time histogram.
	for _, e := range last.Edges {
		if e.P50Ms == nil || e.P99Ms == nil || *e.P50Ms < 0 || *e.P99Ms < *e.P50Ms {
			t.Errorf("edge to %s: p50 %v, p99 %v ms: want both, p50 <= p99", e.Target.Name, e.P50Ms, e.P99Ms)
		}
	}

	// /metrics counts the requests per edge.
	resp, err := http.Get(w.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, target := range []string{"red", "blue"} {
		series := `weft_traffic_requests_total{mesh="m",mesh_owner="111122223333",source="front",source_kind="virtualNode",target="` + target + `"}`
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics has no %s", series)
		}
	}

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			query     string
			status    int
			errorType string
		}{{"", 400, "BadRequestException"}, {"?mesh=nope", 404, "NotFoundException"}} {
			resp, err := http.Get(w.base + "/v1/traffic" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("x-amzn-ErrorType") != tc.errorType {
				t.Errorf("GET /v1/traffic%s: %s %q, want %d %s", tc.query, resp.Status, resp.Header.Get("x-amzn-ErrorType"), tc.status, tc.errorType)
			}
		}
	})
}

func getTraffic(t *testing.T, w *weft, mesh string) traffic {
	t.Helper()
	resp, err := http.Get(w.base + "/v1/traffic?mesh=" + mesh)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/traffic: %s %s", resp.Status, b)
	}
	var v traffic
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
