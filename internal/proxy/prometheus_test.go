package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// freePort returns a loopback port nobody listens on now, for a process
// that cannot be handed a listener.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startPrometheus runs Debian's prometheus scraping targets every second.
func startPrometheus(t *testing.T, targets ...string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: apt-get install prometheus (scripts/test.sh does)")
	}
	dir := t.TempDir()
	tj, _ := json.Marshal(targets)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: weft-proxy
    metrics_path: /stats/prometheus
    static_configs:
      - targets: %s
`, tj)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	waitUntil(t, 60*time.Second, "prometheus ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return addr
}

// promQuery runs an instant query and returns the single sample's value;
// ok is false while the result is empty.
func promQuery(t *testing.T, addr, q string) (float64, map[string]string, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Status != "success" {
		t.Fatalf("query %s: %s", q, out.Error)
	}
	if len(out.Data.Result) == 0 {
		return 0, nil, false
	}
	s, _ := out.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, nil, false
	}
	return v, out.Data.Result[0].Metric, true
}

func TestPrometheusScrapesHistogramsAndTags(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Observability.StatsTags = []stats.Label{{Name: "appmesh.mesh", Value: "test-mesh"}, {Name: "appmesh.virtual_node", Value: "test-node"}}
	})
	app := newBackend(t, "app")
	app.slow = 20 * time.Millisecond
	h.push(httpListener("ingress", httpManager("ingress", "rds")),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	prom := startPrometheus(t, h.p.AdminAddr())
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // traffic until stop
		defer close(done)
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.addr("ingress")+"/", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	defer func() { stop(); <-done }()

	var p50, p99, rps float64
	var labels map[string]string
	waitUntil(t, 60*time.Second, "histogram_quantile and rate from prometheus", func() bool {
		var ok1, ok2, ok3 bool
		p50, labels, ok1 = promQuery(t, prom, `histogram_quantile(0.5, sum by (le, envoy_cluster_name, appmesh_mesh, appmesh_virtual_node) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="local"}[5s])))`)
		p99, _, ok2 = promQuery(t, prom, `histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress"}[5s])))`)
		rps, _, ok3 = promQuery(t, prom, `sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="local"}[5s]))`)
		return ok1 && ok2 && ok3 && p50 > 0 && rps > 0
	})
	// Every request waits 20 ms at the backend: both quantiles fall in the
	// (10, 25] or (25, 50] buckets; one client in a loop makes at most
	// 1000/20 = 50 requests a second.
	if p50 < 10 || p50 > 50 {
		t.Errorf("upstream_rq_time p50 = %v ms, want 10..50", p50)
	}
	if p99 < 10 || p99 > 1000 {
		t.Errorf("downstream_rq_time p99 = %v ms, want 10..1000", p99)
	}
	if rps <= 0 || rps > 50 {
		t.Errorf("request rate %v/s, want (0, 50]", rps)
	}
	if labels["appmesh_mesh"] != "test-mesh" || labels["appmesh_virtual_node"] != "test-node" {
		t.Errorf("stats tags missing from the series: %v", labels)
	}
	t.Logf("p50 %.1f ms, p99 %.1f ms, %.1f req/s", p50, p99, rps)

	// Every query of the Grafana dashboard in docs/ is valid PromQL, and
	// those on histograms and request rates find this proxy's series.
	b, err := os.ReadFile("../../docs/grafana/weft-mesh.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$mesh", "test-mesh", "$node", ".*", "$instance", ".*")
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			_, _, found := promQuery(t, prom, vars.Replace(tg.Expr))
			mustFind := strings.Contains(tg.Expr, "upstream_rq_time_bucket") || strings.Contains(tg.Expr, "downstream_rq_time_bucket") ||
				strings.Contains(tg.Expr, "upstream_rq_total")
			if mustFind && !found {
				t.Errorf("dashboard panel %q: no series for %s", p.Title, tg.Expr)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d dashboard queries", n)
	}
}
