package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// promPort is Prometheus's port in the control plane's namespace, which
// this test creates and nothing else uses.
const promPort = 9090

// scrapeDoc is the scrape configuration the docs ship: the test runs
// Prometheus on it, so a change that breaks it fails here.
const scrapeDoc = "../../docs/prometheus/weft-scrape.yml"

// requirePrometheus returns Debian's prometheus binary. Missing, it skips
// the test, except in CI (WEFT_CI set), where that is a failure.
func requirePrometheus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err == nil {
		return bin
	}
	if os.Getenv("WEFT_CI") != "" {
		t.Fatalf("prometheus is not installed (apt-get install prometheus; scripts/test.sh does): %v", err)
	}
	t.Skipf("SKIPPING %s: prometheus is not installed (apt-get install prometheus; scripts/test.sh does)", t.Name())
	return ""
}

// scrapeConfig is docs/prometheus/weft-scrape.yml as an ECS user adapts
// it: the Kubernetes job dropped, the file of proxy targets and weft
// server's address filled in, and a 1 s interval so the test need not
// wait minutes.
func scrapeConfig(t *testing.T, targetsFile, server string) string {
	t.Helper()
	b, err := os.ReadFile(scrapeDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	k8s := strings.Index(doc, "  - job_name: weft-proxy-k8s")
	file := strings.Index(doc, "  # ECS, EC2 and hosts")
	if k8s < 0 || file < k8s {
		t.Fatalf("%s: no weft-proxy-k8s job before the ECS one: the test's edit of it needs updating", scrapeDoc)
	}
	doc = doc[:k8s] + doc[file:]
	for _, r := range [][2]string{
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"/etc/prometheus/weft-proxies.json", targetsFile},
		{"refresh_interval: 30s", "refresh_interval: 1s"},
		{`"127.0.0.1:9080"`, strconv.Quote(server)},
	} {
		if !strings.Contains(doc, r[0]) {
			t.Fatalf("%s no longer holds %q: the test's edit of it needs updating", scrapeDoc, r[0])
		}
		doc = strings.ReplaceAll(doc, r[0], r[1])
	}
	return doc
}

// promSample is one sample of an instant query's vector result.
type promSample struct {
	labels map[string]string
	value  float64
}

// promQuery runs an instant query through Prometheus's HTTP API, from the
// control plane's namespace.
func (w *world) promQuery(t *testing.T, q string) ([]promSample, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, errOut, err := run(ctx, w.ctl, "curl", "-sS", "--max-time", "5",
		fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", promPort, url.QueryEscape(q)))
	if err != nil {
		return nil, fmt.Errorf("query %s: %w: %s", q, err, errOut)
	}
	var res struct {
		Status, Error string
		Data          struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return nil, fmt.Errorf("query %s: %w: %.200s", q, err, out)
	}
	if res.Status != "success" {
		t.Fatalf("query %s: %s", q, res.Error) // bad PromQL: no retry helps
	}
	var samples []promSample
	for _, r := range res.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		samples = append(samples, promSample{labels: r.Metric, value: v})
	}
	return samples, nil
}

// byInstance indexes samples by their instance label.
func byInstance(samples []promSample) map[string]float64 {
	m := map[string]float64{}
	for _, s := range samples {
		m[s.labels["instance"]] = s.value
	}
	return m
}

// prometheusScrapesTheMesh runs a real Prometheus in the control plane's
// namespace on the scrape configuration of docs/prometheus, scraping weft
// server and two proxies of the mesh (gateway-1, and green behind it)
// while the laptop sends requests through the gateway, and reads back
// through Prometheus's HTTP API the latency quantiles and request rates a
// dashboard shows.
func (w *world) prometheusScrapesTheMesh(t *testing.T) {
	bin := requirePrometheus(t)
	gw, green := w.tasks["gateway-1"], w.tasks["green"]
	if gw == nil || green == nil {
		t.Fatal("needs the gateway-1 and green tasks of sections 3 and 4")
	}
	dir := filepath.Join(w.tmp, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gwTarget := gw.host.Addr.String() + ":9901"
	greenTarget := green.host.Addr.String() + ":9901"
	targets, _ := json.Marshal([]map[string]any{
		{"targets": []string{gwTarget}, "labels": map[string]string{"service": "color-gateway"}},
		{"targets": []string{greenTarget}, "labels": map[string]string{"service": "green"}},
	})
	targetsFile := filepath.Join(dir, "weft-proxies.json")
	if err := os.WriteFile(targetsFile, targets, 0o644); err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("%s:%d", ctlAddr, apiPort)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(scrapeConfig(t, targetsFile, server)), 0o644); err != nil {
		t.Fatal(err)
	}
	w.start("prometheus", w.ctl, -1, nil, "", bin, "--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort), "--log.level=warn")

	// 50 requests/s from the laptop through gateway-1: 4 in 5 to green.
	const rate = 50
	load := w.load(&task{name: "laptop", host: w.laptop}, "http://"+gw.host.Addr.String()+"/router", rate)
	defer load.stop(t)

	up := `up{job=~"weft-server|weft-proxy-file"}`
	waitFor(t, "prometheus scraping weft server and both proxies", 60*time.Second, func() (bool, error) {
		s, err := w.promQuery(t, up)
		if err != nil {
			return false, err
		}
		got := byInstance(s)
		return len(got) == 3 && got[server] == 1 && got[gwTarget] == 1 && got[greenTarget] == 1, fmt.Errorf("up = %v", got)
	})

	// Quantiles and rates over the last 5 s, per proxy. Both proxies'
	// upstream requests each go to one colorapp on loopback or the
	// bridge: milliseconds, far under a second. The gateway's own
	// self_redirect cluster (a request goes through it before its
	// target's) is left out of the rates, so each request counts once.
	p50q := `histogram_quantile(0.5, sum by (le, instance) (rate(envoy_cluster_upstream_rq_time_bucket{job="weft-proxy-file"}[5s])))`
	p99q := `histogram_quantile(0.99, sum by (le, instance) (rate(envoy_cluster_upstream_rq_time_bucket{job="weft-proxy-file"}[5s])))`
	rpsq := `sum by (instance) (rate(envoy_cluster_upstream_rq_total{job="weft-proxy-file", envoy_cluster_name!~".*self_redirect.*"}[5s]))`
	greenq := `sum by (instance) (rate(envoy_cluster_upstream_rq_total{job="weft-proxy-file", envoy_cluster_name=~"cds_egress_.*_green_.*"}[5s]))`
	var p50, p99, rps, toGreen map[string]float64
	took := waitFor(t, "histogram_quantile and request rates of both proxies", 60*time.Second, func() (bool, error) {
		for _, q := range []struct {
			expr string
			out  *map[string]float64
		}{{p50q, &p50}, {p99q, &p99}, {rpsq, &rps}, {greenq, &toGreen}} {
			s, err := w.promQuery(t, q.expr)
			if err != nil {
				return false, err
			}
			*q.out = byInstance(s)
		}
		// Plausible: the gateway sends about the load's rate, 4 in 5 of
		// it to green, and green's sidecar passes that on to its app.
		gwRate, greenRate := rps[gwTarget], rps[greenTarget]
		share := toGreen[gwTarget] / gwRate
		ok := p50[gwTarget] > 0 && p50[greenTarget] > 0 &&
			gwRate > 0.5*rate && gwRate < 1.5*rate &&
			share > 0.65 && share < 0.95 &&
			greenRate > 0.5*0.8*rate && greenRate < 1.5*0.8*rate
		return ok, fmt.Errorf("p50 %v, p99 %v, rates %v, gateway to green %v", p50, p99, rps, toGreen)
	})
	for _, inst := range []string{gwTarget, greenTarget} {
		// NaN (no bucket) fails both comparisons. The upstream requests
		// take about a millisecond: a p50 over 100 would be microseconds
		// recorded as milliseconds (or a proxy far slower than it is).
		if !(p50[inst] > 0 && p50[inst] <= 100) || !(p99[inst] >= p50[inst] && p99[inst] <= 5000) {
			t.Errorf("%s: upstream_rq_time p50 %v ms, p99 %v ms: want 0 < p50 <= 100 and p50 <= p99 <= 5000", inst, p50[inst], p99[inst])
		}
	}
	t.Logf("after %v: upstream_rq_time p50 %v ms, p99 %v ms; requests/s %v (gateway to green %v)",
		took.Round(100*time.Millisecond), p50, p99, rps, toGreen[gwTarget])

	// weft server's own series, on the same Prometheus: the traffic the
	// proxies report over LRS, as /metrics serves it.
	waitFor(t, "weft server's series in prometheus", 30*time.Second, func() (bool, error) {
		s, err := w.promQuery(t, `count({job="weft-server", __name__=~"weft_.+"})`)
		if err != nil {
			return false, err
		}
		return len(s) == 1 && s[0].value > 0, fmt.Errorf("%v", s)
	})
}
