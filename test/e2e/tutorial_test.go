package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/netns/netnstest"

	"github.com/weftmesh/weft/internal/weftbin"
)

// labFamily starts every namespace and link this test creates (then comes
// the test process's id), so a run can sweep what a killed run left behind
// and two runs at once do not meet.
const labFamily = "wfte"

// The lab's addresses: a private /24 that only this test's namespaces use.
// The bridge has no address in the root namespace, so nothing of the host's
// is involved.
var (
	labSubnet = netip.MustParsePrefix("10.251.30.0/24")
	ctlAddr   = netip.MustParseAddr("10.251.30.1")
)

// taskAddr is the address of each task (and of the laptop that plays the
// tutorial reader's machine) on the lab's bridge.
func taskAddr(name string) netip.Addr {
	last := map[string]byte{
		"red": 11, "blue": 12, "green": 13, "yellow": 14,
		"gateway-1": 21, "gateway-2": 22, "laptop": 100,
	}[name]
	a := labSubnet.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

const (
	apiPort = 9080
	xdsPort = 15128
	// propagation is how soon a change made with the API shows in traffic.
	propagation = time.Second
	// splitRequests and splitTolerance: 4:1 is 80 %, within 4 points.
	splitRequests  = 1000
	splitTolerance = 4.0
)

func TestTutorial(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "curl", "nslookup", "dig", "setpriv", "aws")
	bin := weftbin.Build(t)
	w := setUp(t, bin)

	t.Run("1 basic infrastructure", w.section1)
	t.Run("2 first two virtual nodes", w.section2)
	t.Run("3 virtual router", w.section3)
	t.Run("4 virtual gateway", w.section4)
	t.Run("5 TLS", w.section5)
}

// setUp creates the lab and starts weft server in its own namespace.
func setUp(t *testing.T, bin string) *world {
	ctx := context.Background()
	if removed, err := netns.Sweep(ctx, labFamily); err != nil || len(removed) > 0 {
		t.Logf("swept leftovers of an earlier run: %v (err %v)", removed, err)
	}
	lab, err := netns.New(ctx, labFamily, labSubnet, discard())
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after every process is stopped.
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("tear down lab: %v", err)
		}
		if left := netns.Remaining(context.Background(), lab.Prefix()); len(left) > 0 {
			t.Errorf("left behind after teardown: %v", left)
		}
	})
	tmp := t.TempDir()
	w := &world{
		t: t, lab: lab, weft: bin, tmp: tmp,
		api:      fmt.Sprintf("http://%s:%d", ctlAddr, apiPort),
		xds:      fmt.Sprintf("%s:%d", ctlAddr, xdsPort),
		region:   "us-east-1",
		account:  "111122223333",
		services: map[string]string{},
		tasks:    map[string]*task{},
	}
	w.ctl, err = lab.AddHost(ctx, "ctl", ctlAddr, netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.start("weft server", w.ctl, -1, nil, filepath.Join(tmp, "server.out"), bin, "server",
		"--api-addr", fmt.Sprintf("%s:%d", ctlAddr, apiPort),
		"--xds-addr", w.xds,
		"--dns-addr", fmt.Sprintf("%s:53", ctlAddr),
		"--data-dir", filepath.Join(tmp, "data"),
		// As on a shared network: every API call signed by a key of
		// the credentials file, every proxy proving its node with a
		// join token before it is served anything.
		"--auth-file", w.writeAuthFile(),
		"--region", w.region, "--account-id", w.account,
		"--cert-lifetime", certLifetime.String())
	waitFor(t, "weft server /healthz", 30*time.Second, func() (bool, error) {
		out, code := curl(t, w.ctl, w.api+"/healthz")
		return code == 0 && strings.TrimSpace(out) == "ok", fmt.Errorf("curl exit %d: %q", code, out)
	})
	return w
}

// section1: the Cloud Map namespace and services, and the mesh.
func (w *world) section1(t *testing.T) {
	var op struct{ OperationId string }
	w.aws(&op, "servicediscovery", "create-private-dns-namespace",
		"--cli-input-json", w.input("01a-namespace.json", "<vpc-id>", "vpc-0e2e0weft0000001"))
	if op.OperationId == "" {
		t.Fatal("create-private-dns-namespace returned no OperationId")
	}
	w.namespaceID = w.waitOperation(op.OperationId)["NAMESPACE"]
	if w.namespaceID == "" {
		t.Fatal("the namespace operation names no NAMESPACE target")
	}

	for _, color := range []string{"red", "blue"} {
		w.createService(t, "01b-"+color+".json", color)
	}

	// get-service shows what the tutorial prints.
	var got struct {
		Service struct {
			Id, Arn, Name, NamespaceId, Type string
			DnsConfig                        struct {
				RoutingPolicy string
				DnsRecords    []struct {
					Type string
					TTL  int
				}
			}
		}
	}
	w.aws(&got, "servicediscovery", "get-service", "--id", w.services["red"])
	s := got.Service
	if s.Name != "red" || s.NamespaceId != w.namespaceID || s.Type != "DNS_HTTP" ||
		!strings.HasPrefix(s.Arn, "arn:aws:servicediscovery:"+w.region+":"+w.account+":service/"+s.Id) ||
		s.DnsConfig.RoutingPolicy != "MULTIVALUE" || len(s.DnsConfig.DnsRecords) != 1 ||
		s.DnsConfig.DnsRecords[0].Type != "A" || s.DnsConfig.DnsRecords[0].TTL != 300 {
		t.Errorf("get-service red = %+v, want the tutorial's output (Type DNS_HTTP, MULTIVALUE, A 300, ARN in %s)", s, w.region)
	}

	var mesh struct {
		Mesh struct {
			MeshName string
			Spec     struct{ EgressFilter struct{ Type string } }
			Status   struct{ Status string }
		}
	}
	// "The default TTL of SOA records in Cloud Map is 15 seconds."
	if rr := dig(t, w.ctl, "colors.local", "SOA"); len(rr) != 1 || rr[0].ttl != 15 {
		t.Errorf("dig colors.local SOA = %+v, want one SOA record with TTL 15", rr)
	} else {
		t.Logf("colors.local SOA TTL %d", rr[0].ttl)
	}

	w.aws(&mesh, "appmesh", "create-mesh", "--cli-input-json", w.input("01c-mesh.json"))
	if m := mesh.Mesh; m.MeshName != "color-mesh" || m.Spec.EgressFilter.Type != "DROP_ALL" || m.Status.Status != "ACTIVE" {
		t.Errorf("create-mesh = %+v, want color-mesh, DROP_ALL, ACTIVE", m)
	}
}

// createService runs create-service with a tutorial file and records the id.
func (w *world) createService(t *testing.T, file, name string) {
	t.Helper()
	var out struct {
		Service struct{ Id, Arn, Name string }
	}
	w.aws(&out, "servicediscovery", "create-service", "--cli-input-json",
		w.input(file, "<cloud-map-namespace-id>", w.namespaceID))
	if out.Service.Name != name || out.Service.Id == "" || out.Service.Arn == "" {
		t.Fatalf("create-service %s = %+v, want its Name, Id and Arn", file, out.Service)
	}
	w.services[name] = out.Service.Id
}

// section2: red and blue, asymmetric backends, and the proxy's admin.
func (w *world) section2(t *testing.T) {
	w.aws(nil, "appmesh", "create-virtual-node", "--cli-input-json", w.input("02a-red-node.json"))
	w.aws(nil, "appmesh", "create-virtual-service", "--cli-input-json", w.input("02b-red-service.json"))
	w.aws(nil, "appmesh", "create-virtual-node", "--cli-input-json", w.input("02c-blue-node.json"))
	w.aws(nil, "appmesh", "create-virtual-service", "--cli-input-json", w.input("02d-blue-service.json"))

	red := w.launch(t, "red", readTaskDefinition(t, "02e-red-td.json"), "red")
	blue := w.launch(t, "blue", readTaskDefinition(t, "02e-blue-td.json"), "blue")

	t.Run("from blue", func(t *testing.T) {
		out, code := curl(t, blue.host, "localhost")
		if code != 0 || out != "blue" {
			t.Errorf("curl localhost in blue = %q (exit %d), want blue", out, code)
		}
		got := nslookup(t, blue.host, "red.colors.local")
		if !slices.Equal(got, []netip.Addr{red.host.Addr}) {
			t.Errorf("nslookup red.colors.local in blue = %v, want red's task address %s", got, red.host.Addr)
		}
		t.Logf("in blue: curl localhost = %q; nslookup red.colors.local = %v (red's task)", out, got)
		// 01b's DnsRecords: A, TTL 300.
		if rr := dig(t, blue.host, "red.colors.local", "A"); len(rr) != 1 || rr[0].ttl != 300 || rr[0].data != red.host.Addr.String() {
			t.Errorf("dig red.colors.local A in blue = %+v, want one A record %s with TTL 300", rr, red.host.Addr)
		}
		// The first request may race the endpoint's arrival at blue's
		// proxy; the tutorial's reader is never that fast.
		took := waitFor(t, "curl red.colors.local from blue answers red", 5*time.Second, func() (bool, error) {
			out, code := curl(t, blue.host, "red.colors.local")
			return code == 0 && out == "red", fmt.Errorf("%q, curl exit %d", out, code)
		})
		t.Logf("blue -> red.colors.local answered red (%s after both tasks were healthy)", took.Round(time.Millisecond))
	})

	t.Run("from red", func(t *testing.T) {
		out, code := curl(t, red.host, "localhost")
		if code != 0 || out != "red" {
			t.Errorf("curl localhost in red = %q (exit %d), want red", out, code)
		}
		got := nslookup(t, red.host, "blue.colors.local")
		if !slices.Equal(got, []netip.Addr{blue.host.Addr}) {
			t.Errorf("nslookup blue.colors.local in red = %v, want blue's task address %s", got, blue.host.Addr)
		}
		t.Logf("in red: curl localhost = %q; nslookup blue.colors.local = %v (blue's task)", out, got)
		// "This should fail, typically with a recv error or an empty
		// reply from the server": curl's 56 or 52.
		out, code = curl(t, red.host, "blue.colors.local")
		if code != 52 && code != 56 {
			t.Errorf("curl blue.colors.local in red = %q, exit %d; want a recv error (56) or an empty reply (52)", out, code)
		}
		t.Logf("in red: curl blue.colors.local fails with curl exit %d", code)
	})

	t.Run("adding and removing red's backend", func(t *testing.T) {
		// The tutorial's loop: while true; do curl blue.colors.local; sleep 1; done
		watch := w.watch(red, "http://blue.colors.local/")
		isBlue := func(l watchLine) bool { return l.ok && l.text == "blue" }
		failed := func(l watchLine) bool { return !l.ok }

		withBackend := jsonInput(t, "02a-red-node.json")
		withBackend["spec"].(map[string]any)["backends"] = []any{
			map[string]any{"virtualService": map[string]any{"virtualServiceName": "blue.colors.local"}},
		}
		input := w.writeInput("02-red-add-blue.json", mustJSON(t, withBackend))
		steady := w.steady(t, watch, "the loop fails before the backend is added", failed)
		start := time.Now()
		w.aws(nil, "appmesh", "update-virtual-node", "--cli-input-json", input)
		took := w.waitWatch(t, watch, steady, start, time.Now(), "red -> blue.colors.local answers blue after adding the backend", isBlue)
		t.Logf("red -> blue.colors.local answered blue %s after update-virtual-node returned (0s: before the CLI exited)", took.Round(time.Millisecond))

		steady = w.steady(t, watch, "the loop answers blue before the backend is removed", isBlue)
		start = time.Now()
		w.aws(nil, "appmesh", "update-virtual-node", "--cli-input-json", w.input("02a-red-node.json"))
		took = w.waitWatch(t, watch, steady, start, time.Now(), "red -> blue.colors.local fails again after removing the backend", failed)
		t.Logf("red -> blue.colors.local failed again %s after update-virtual-node returned", took.Round(time.Millisecond))
		// And stays failed for the tutorial's own curl.
		if out, code := curl(t, red.host, "blue.colors.local"); code != 52 && code != 56 {
			t.Errorf("curl blue.colors.local in red after removal = %q, exit %d; want 52 or 56", out, code)
		}
		watch.proc.stop()
	})

	t.Run("envoy admin", func(t *testing.T) {
		ctx := context.Background()
		checks := []struct{ path, want string }{
			{"/server_info", `"state":`},
			{"/ready", "LIVE"},
		}
		for _, c := range checks {
			out, _, err := run(ctx, red.host, "curl", "-sS", "http://localhost:9901"+c.path)
			if err != nil || !strings.Contains(out, c.want) {
				t.Errorf("curl localhost:9901%s in red = %q (%v), want it to contain %q", c.path, out, err, c.want)
			}
		}
		out, _, err := run(ctx, red.host, "sh", "-c", "curl -s localhost:9901/stats | grep connected")
		if err != nil || strings.TrimSpace(out) != "control_plane.connected_state: 1" {
			t.Errorf("curl localhost:9901/stats | grep connected = %q (%v), want control_plane.connected_state: 1", out, err)
		}
		out, _, err = run(ctx, red.host, "curl", "-sS", "localhost:9901/stats/prometheus")
		if err != nil || !strings.Contains(out, "# TYPE envoy_") {
			t.Errorf("curl localhost:9901/stats/prometheus gives no Prometheus text with envoy_ metrics (%v):\n%.500s", err, out)
		}
	})
}

// steady waits until the last five requests of wt all satisfy cond: the
// state before a change, so that the change is what alters it. It returns
// when it saw that.
func (w *world) steady(t *testing.T, wt *watcher, what string, cond func(watchLine) bool) time.Time {
	t.Helper()
	waitFor(t, what, 10*time.Second, func() (bool, error) {
		lines := wt.since(time.Time{})
		if len(lines) < 5 {
			return false, fmt.Errorf("%d requests so far", len(lines))
		}
		for _, l := range lines[len(lines)-5:] {
			if !cond(l) {
				return false, fmt.Errorf("recent request: ok=%v %s", l.ok, l.text)
			}
		}
		return true, nil
	})
	return time.Now()
}

// waitWatch waits for the first request of wt that satisfies cond and
// ended after the AWS CLI command that made the change started (at start;
// it returned at saved), and checks that none did between steady and
// start. It returns how long after saved that request ended (0 if the
// change showed before the CLI had even exited); more than the propagation
// goal is an error.
func (w *world) waitWatch(t *testing.T, wt *watcher, steady, start, saved time.Time, what string, cond func(watchLine) bool) time.Duration {
	t.Helper()
	var took time.Duration
	waitFor(t, what, propagation+2*time.Second, func() (bool, error) {
		for _, l := range wt.since(start) {
			if cond(l) {
				took = max(0, l.at.Sub(saved))
				return true, nil
			}
		}
		if done, err := wt.proc.exited(); done {
			t.Fatalf("watch client ended: %v: %s", err, wt.proc.tail)
		}
		return false, fmt.Errorf("%d requests since, none yet", len(wt.since(start)))
	})
	for _, l := range wt.since(steady) {
		if l.at.Before(start) && cond(l) {
			t.Errorf("%s: a request that ended before the change already did (%v %s)", what, l.ok, l.text)
			break
		}
	}
	// The time is logged, not asserted: the deadline above is the test's
	// bound, and how fast a change propagates is measured in
	// docs/bench/xds.md, not on a shared CI machine.
	t.Logf("%s: took %s", what, took.Round(time.Millisecond))
	return took
}

// section3: green and yellow behind a virtual router, and its weights.
func (w *world) section3(t *testing.T) {
	w.createService(t, "03a-router.json", "router")
	w.createService(t, "03a-yellow.json", "yellow")
	w.aws(nil, "appmesh", "create-virtual-node", "--cli-input-json", w.input("03b-green-node.json"))
	w.aws(nil, "appmesh", "create-virtual-node", "--cli-input-json", w.input("03b-yellow-node.json"))

	// The tutorial derives green's and yellow's task definitions from
	// red's: family, container names, COLOR, log streams and the ARN.
	green := w.launch(t, "green", derivedTaskDefinition(t, "green"), "router")
	yellow := w.launch(t, "yellow", derivedTaskDefinition(t, "yellow"), "yellow")

	w.aws(nil, "appmesh", "create-virtual-router", "--cli-input-json", w.input("03e-color-router.json"))
	w.aws(nil, "appmesh", "create-route", "--cli-input-json", w.input("03f-color-route.json"))
	w.aws(nil, "appmesh", "create-virtual-service", "--cli-input-json", w.input("03g-color-service.json"))
	w.aws(nil, "appmesh", "update-virtual-node", "--cli-input-json", w.input("03h-update-red.json"))
	red := w.tasks["red"]

	if got := nslookup(t, red.host, "router.colors.local"); !slices.Equal(got, []netip.Addr{green.host.Addr}) {
		t.Errorf("nslookup router.colors.local in red = %v, want only green's task address %s", got, green.host.Addr)
	}
	waitFor(t, "red -> router.colors.local answers", 5*time.Second, func() (bool, error) {
		out, code := curl(t, red.host, "router.colors.local")
		return code == 0 && (out == "green" || out == "yellow"), fmt.Errorf("%q, curl exit %d", out, code)
	})

	t.Run("4:1 split", func(t *testing.T) {
		w.assertSplit(t, red.host, "http://router.colors.local/", map[string]float64{"green": 80, "yellow": 20})
	})

	t.Run("4:1 split in /v1/traffic", func(t *testing.T) {
		// red's sidecar reports its load every 5 s (LRS): within 10 s
		// the control plane's traffic graph has the split.
		w.assertTraffic(t, "red", "router.colors.local", map[string]float64{"green": 80, "yellow": 20})
	})

	t.Run("green at weight 0", func(t *testing.T) {
		w.updateRoute(t, "03-green-0.json", map[string]int{"green": 0, "yellow": 1})
		w.waitAll(t, red.host, "http://router.colors.local/", "yellow")
		c := w.count(red.host, "http://router.colors.local/", 200)
		if c.Bodies["yellow"] != 200 {
			t.Errorf("with green at weight 0, 200 requests gave %v (errors %d: %s), want all yellow", c.Bodies, c.Errors, c.FirstError)
		}
	})

	t.Run("blue instead of green", func(t *testing.T) {
		w.updateRoute(t, "03-blue-1.json", map[string]int{"blue": 1, "yellow": 1})
		w.waitAll(t, red.host, "http://router.colors.local/", "", "blue", "yellow")
		c := w.count(red.host, "http://router.colors.local/", 200)
		if c.Bodies["green"] != 0 || c.Bodies["blue"] == 0 || c.Bodies["yellow"] == 0 || c.Errors > 0 {
			t.Errorf("with blue replacing green, 200 requests gave %v (errors %d: %s), want blue and yellow and no green", c.Bodies, c.Errors, c.FirstError)
		}
	})

	t.Run("back to 4:1", func(t *testing.T) {
		w.aws(nil, "appmesh", "update-route", "--cli-input-json", w.input("03f-color-route.json"))
		w.waitAll(t, red.host, "http://router.colors.local/", "", "green", "yellow")
		w.assertSplit(t, red.host, "http://router.colors.local/", map[string]float64{"green": 80, "yellow": 20})
	})

	t.Run("access logs", func(t *testing.T) {
		// red: the text format of 02a/03h.
		text := regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] GET / HTTP/1\.1 200$`)
		if got := matching(red.accessLog(t), text); len(got) == 0 {
			t.Errorf("red's proxy stdout has no line in the text format %q; last lines:\n%s", text, lastLines(red.accessLog(t), 5))
		} else {
			t.Logf("red (text format): %s", got[len(got)-1])
		}
		// blue: the json format of 02c, five keys.
		if n := jsonLogLines(t, w.tasks["blue"].accessLog(t)); n == 0 {
			t.Errorf("blue's proxy stdout has no line in 02c's json format; last lines:\n%s", lastLines(w.tasks["blue"].accessLog(t), 5))
		} else {
			t.Logf("blue (json format, %d lines): %s", n, lastLines(w.tasks["blue"].accessLog(t), 1))
		}
		// green and yellow: no format given, Envoy's default.
		for _, tk := range []*task{green, yellow} {
			if got := matching(tk.accessLog(t), envoyDefault("router.colors.local")); len(got) == 0 {
				t.Errorf("%s's proxy stdout has no line in Envoy's default format; last lines:\n%s", tk.name, lastLines(tk.accessLog(t), 5))
			} else {
				t.Logf("%s (Envoy's default format): %s", tk.name, got[len(got)-1])
			}
		}
	})
}

// updateRoute edits color-route's weighted targets, as the tutorial does in
// the console, and saves it with update-route.
func (w *world) updateRoute(t *testing.T, file string, weights map[string]int) {
	t.Helper()
	route := jsonInput(t, "03f-color-route.json")
	var targets []any
	for _, node := range slices.Sorted(maps.Keys(weights)) {
		targets = append(targets, map[string]any{"port": 80, "virtualNode": node, "weight": weights[node]})
	}
	route["spec"].(map[string]any)["httpRoute"].(map[string]any)["action"].(map[string]any)["weightedTargets"] = targets
	w.aws(nil, "appmesh", "update-route", "--cli-input-json", w.writeInput(file, mustJSON(t, route)))
}

// section4: the virtual gateway, two replicas, reached from outside the mesh.
func (w *world) section4(t *testing.T) {
	w.aws(nil, "appmesh", "create-virtual-gateway", "--cli-input-json", w.input("04a-color-gateway.json"))
	w.aws(nil, "appmesh", "create-gateway-route", "--cli-input-json", w.input("04b-color-gateway-route-1.json"))
	w.aws(nil, "appmesh", "create-gateway-route", "--cli-input-json", w.input("04b-color-gateway-route-2.json"))

	td := readTaskDefinition(t, "04c-gateway-td.json")
	// desiredCount 2, behind the NLB: two tasks of the same definition.
	gws := []*task{w.launch(t, "gateway-1", td, ""), w.launch(t, "gateway-2", td, "")}
	laptop, err := w.lab.AddHost(context.Background(), "laptop", taskAddr("laptop"), netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.laptop = laptop
	for _, gw := range gws {
		t.Run(gw.name, func(t *testing.T) {
			base := "http://" + gw.host.Addr.String()
			waitFor(t, gw.name+" / answers", 5*time.Second, func() (bool, error) {
				out, code := curl(t, laptop, base)
				return code == 0 && out == "blue", fmt.Errorf("%q, curl exit %d", out, code)
			})
			if out, code := curl(t, laptop, base); code != 0 || out != "blue" {
				t.Errorf("curl %s = %q (exit %d), want blue", base, out, code)
			} else {
				t.Logf("from the laptop: curl %s = %q", base, out)
			}
			w.assertSplit(t, laptop, base+"/router", map[string]float64{"green": 80, "yellow": 20})
			if got := matching(gw.accessLog(t), envoyDefaultPath("/router")); len(got) == 0 {
				t.Errorf("%s's stdout has no /router line in Envoy's default format; last lines:\n%s", gw.name, lastLines(gw.accessLog(t), 5))
			} else {
				t.Logf("%s (Envoy's default format): %s", gw.name, got[len(got)-1])
			}
		})
	}
	t.Run("gateway split in /v1/traffic", func(t *testing.T) {
		// Both replicas' reports, summed into the gateway's edges.
		w.assertTraffic(t, "color-gateway", "router.colors.local", map[string]float64{"green": 80, "yellow": 20})
	})
	t.Run("prometheus scrapes the mesh", w.prometheusScrapesTheMesh)
}

// envoyDefault matches Envoy's default access log format for a GET / that
// succeeded with the given :authority:
// [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
// %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
// "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
func envoyDefault(authority string) *regexp.Regexp {
	return regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET / HTTP/1\.1" 200 - \d+ \d+ \d+ (\d+|-) "[^"]*" "[^"]*" "[^"]*" "` +
		regexp.QuoteMeta(authority) + `" "[^"]*"$`)
}

// envoyDefaultPath is envoyDefault for any authority and the given path.
func envoyDefaultPath(path string) *regexp.Regexp {
	return regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET ` + regexp.QuoteMeta(path) +
		` HTTP/1\.1" 200 - \d+ \d+ \d+ (\d+|-) "[^"]*" "[^"]*" "[^"]*" "[^"]*" "[^"]*"$`)
}

// jsonLogLines counts the lines that are 02c's json format: exactly its
// five keys, for a GET / answered 200.
func jsonLogLines(t *testing.T, lines []string) int {
	t.Helper()
	n := 0
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || len(m) != 5 {
			continue
		}
		start, _ := m["start_time"].(string)
		code := fmt.Sprint(m["response_code"])
		if m["method"] == "GET" && m["request_path"] == "/" && m["protocol"] == "HTTP/1.1" &&
			code == "200" && regexp.MustCompile(`^\d{4}-\d\d-\d\dT`).MatchString(start) {
			n++
		}
	}
	return n
}

func lastLines(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}
