package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

const mesh = "color-mesh"

type css = chromedp.CSS

// submitForm opens the page at hash, fills a form field by field (keys
// typed as a user types them), clicks its button submit and waits for
// want, an element the page then shows.
func (e *env) submitForm(t *testing.T, what, hash string, fields [][2]string, submit, want string) {
	t.Helper()
	// Enabled: a form the server drew is enabled once the page's module
	// has taken it over.
	actions := []chromedp.Action[chromedp.Void]{chromedp.Navigate(e.base + "/console/" + hash), chromedp.WaitVisible(css(submit)), chromedp.WaitEnabled(css(submit))}
	for _, f := range fields {
		actions = append(actions, chromedp.SendKeys(css(f[0]), f[1]))
	}
	actions = append(actions, chromedp.Click(css(submit)), chromedp.WaitVisible(css(want)))
	e.run(t, what, actions...)
}

// createViaForm submits a create form; want is an element the next page
// shows.
func (e *env) createViaForm(t *testing.T, hash string, fields [][2]string, want string) {
	t.Helper()
	e.submitForm(t, "create via "+hash, hash, fields, "#submit", want)
}

func eval[T any](t *testing.T, e *env, expr string) T {
	t.Helper()
	return value(t, e, expr, chromedp.Evaluate[T](expr))
}

func poll(expr string) chromedp.Action[chromedp.Void] {
	return pollFor(15*time.Second, expr)
}

// pollFor waits until expr is true in the page, at most d.
func pollFor(d time.Duration, expr string) chromedp.Action[chromedp.Void] {
	p := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d))
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := p(ctx, tg)
		return chromedp.Void{}, err
	}
}

// The traffic sent through the gateway while the split is changed: about
// loadRate requests/s; a share on the graph (over the server's 5 s
// window, some 400 requests) is within shareTolerance of the weights'
// (the gateway picks each request's target at random: the standard
// deviation of blue's share is 0.02-0.025).
const (
	loadRate       = 80
	shareTolerance = 0.1
)

// trafficLabel is the text of an edge carrying traffic: its weight, then
// what /v1/traffic says of it.
var trafficLabel = regexp.MustCompile(`weight 4 \(50%\) · [0-9.]+ rps · [0-9.]+% err · p99 [0-9.]+ ms`)

// blueShare is a condition on the topology drawn: the route's edges to
// blue and red both carry traffic, and blue's share of their requests/s
// is want ± tol.
func blueShare(want, tol float64) string {
	return fmt.Sprintf(`(() => {
		const rps = (n) => { const l = document.querySelector('#topology text.el[data-edge="route:color-router/color-route>virtualNode:' + n + '"]');
			const m = l && l.textContent.match(/([0-9.]+) rps/); return m ? Number(m[1]) : 0; };
		const b = rps('blue'), r = rps('red');
		return b > 0 && r > 0 && Math.abs(b / (b + r) - %g) <= %g; })()`, want, tol)
}

// edgeLabels is the text on the route's edges to blue and red.
func edgeLabels(t *testing.T, e *env) string {
	t.Helper()
	return eval[string](t, e, `[...document.querySelectorAll('#topology text.el')].filter((l) => l.dataset.edge.startsWith('route:'))
		.map((l) => l.textContent).sort().join('; ')`)
}

func loadSummary(c *loadCounts) string {
	by, failed := c.snapshot()
	return fmt.Sprintf("blue %d, red %d, failed %d", by["blue"], by["red"], failed)
}

// scriptsBeforeView reads, in the page, the script files fetched before
// the view was drawn (the weft-view mark): paths, sorted.
const scriptsBeforeView = `(() => { const view = performance.getEntriesByName('weft-view')[0].startTime;
	return performance.getEntriesByType('resource').filter((r) => r.startTime < view).map((r) => new URL(r.name).pathname)
	  .filter((p) => p.endsWith('.js')).sort(); })()`

// TestConsole walks the tutorial's steps in the console: the mesh created
// through the forms, a bad spec refused inline with nothing written, the
// live topology, the 4:1 split moved to 1:1 with the slider and ACKed by
// real weft proxies, deletes refused with ResourceInUseException.
func TestConsole(t *testing.T) {
	e := newEnv(t)

	t.Run("first page", func(t *testing.T) {
		// Times are from the navigation's request start (Navigation
		// Timing's requestStart): what comes before it is the browser
		// setting up the navigation (a renderer for the page), the same
		// for any page. The baseline, in the same browser and run: a page
		// of 3 bytes from the same listener, measured the same way.
		e.run(t, "baseline", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/healthz"))
		base := eval[map[string]float64](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0];
			return { load: n.loadEventEnd - n.startTime, own: n.loadEventEnd - n.requestStart }; })()`)
		e.run(t, "load the meshes page", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"), chromedp.WaitVisible(css("#list-mesh")),
			poll(`performance.getEntriesByName('weft-view').length > 0`))
		nav := eval[map[string]float64](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0];
			const rs = performance.getEntriesByType('resource');
			const view = performance.getEntriesByName('weft-view')[0].startTime;
			return { load: n.loadEventEnd - n.startTime, view, own: view - n.requestStart, before: n.requestStart,
			  // the first page's own: not the other views' modules, fetched once it is drawn
			  bytes: n.encodedBodySize + rs.filter((r) => r.startTime < view).reduce((s, r) => s + r.encodedBodySize, 0),
			  requests: rs.filter((r) => r.startTime < view).length + 1 }; })()`)
		t.Logf("first page (cold cache, loopback; TestConsoleFirstPage times its paint): the page's code took the meshes list over %.1f ms after the request started (%.1f ms after navigation start, of which %.1f ms before the request); load event at %.1f ms; baseline: /healthz loaded %.1f ms after its request started (%.1f ms after navigation start); %.0f requests, %.0f bytes on the wire",
			nav["own"], nav["view"], nav["before"], nav["load"], base["own"], base["load"], nav["requests"], nav["bytes"])
		// Where the time goes, from the request start: the index, the
		// stylesheet and modules, the app module running, the API call,
		// the list drawn.
		parts := eval[string](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0], t0 = n.requestStart;
			const f = (x) => (x - t0).toFixed(1);
			const view = performance.getEntriesByName('weft-view')[0].startTime;
			const app = performance.getEntriesByName('weft-app')[0];
			const rs = performance.getEntriesByType('resource').filter((r) => r.startTime < view);
			const mods = rs.filter((r) => /[.]js/.test(r.name)), css = rs.filter((r) => /[.]css/.test(r.name));
			const apiR = rs.filter((r) => r.name.includes('/v20190125/'));
			const span = (l) => l.length ? f(Math.min(...l.map((r) => r.startTime))) + '-' + f(Math.max(...l.map((r) => r.responseEnd))) : 'none';
			return 'index response ' + f(n.responseStart) + '-' + f(n.responseEnd) + ' ms; stylesheet ' + span(css) + '; ' + mods.length + ' modules ' + span(mods) +
			  '; DOM interactive ' + f(n.domInteractive) + '; app module running ' + (app ? f(app.startTime) : '?') + '; API call ' + span(apiR) +
			  '; DOMContentLoaded end ' + f(n.domContentLoadedEventEnd) + '; list taken over ' + f(view); })()`)
		t.Logf("first page, from the request start: %s", parts)
		// The list came in the page, drawn by the server: the page's
		// module drew it again from the answer the page carries, without
		// asking the API.
		if n := eval[int](t, e, `performance.getEntriesByType('resource').filter((r) => r.name.includes('/v20190125/meshes')).length`); n != 0 {
			t.Fatalf("the meshes list was read %d times, want none (it is in the page)", n)
		}
		// The list is drawn with the page (and its stylesheet, in the
		// index): before its module took it over, the first page fetched
		// only that module's file, once the first frame was drawn; the
		// other views' files come after, in the background.
		if js := eval[[]string](t, e, `(() => { const view = performance.getEntriesByName('weft-view')[0].startTime;
			return performance.getEntriesByType('resource').filter((r) => r.startTime < view).map((r) => new URL(r.name).pathname); })()`); len(js) != 1 || !strings.HasPrefix(js[0], "/console/b/first-") {
			t.Fatalf("the first page fetched %v before its module took it over, want its module's file only", js)
		}
		e.run(t, "the other views' code prefetched after the first page", poll(`(() => {
			const js = performance.getEntriesByType('resource').map((r) => new URL(r.name).pathname);
			return ['mesh', 'topology', 'cloudmap', 'proxies'].every((v) => js.some((p) => p.startsWith('/console/b/' + v + '-'))); })()`))
		e.screenshot(t, "meshes-empty")
		// Again, with the assets in the cache.
		e.run(t, "reload", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"), chromedp.WaitVisible(css("#list-mesh")),
			poll(`performance.getEntriesByName('weft-view').length > 0`))
		nav = eval[map[string]float64](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0];
			const view = performance.getEntriesByName('weft-view')[0].startTime;
			return { own: view - n.requestStart, view, requests: performance.getEntriesByType('resource').length + 1 }; })()`)
		t.Logf("second load (warm cache): meshes list taken over %.1f ms after the request started (%.1f ms after navigation start); %.0f requests", nav["own"], nav["view"], nav["requests"])
	})

	t.Run("create the tutorial mesh through the forms", func(t *testing.T) {
		e.createViaForm(t, "#/new/mesh", [][2]string{{"#name", mesh}}, "#topology")
		for _, n := range []string{"blue", "red"} {
			e.createViaForm(t, "#/mesh/"+mesh+"/new/virtualNode",
				[][2]string{{"#name", n}, {"#f-hostname", n + ".colors.local"}}, "#metadata")
		}
		e.createViaForm(t, "#/mesh/"+mesh+"/new/virtualRouter", [][2]string{{"#name", "color-router"}}, "#metadata")
		e.createViaForm(t, "#/mesh/"+mesh+"/new/route/color-router",
			[][2]string{{"#name", "color-route"}, {"#f-targets", "blue:4, red:1"}}, "#weights-h")
		e.createViaForm(t, "#/mesh/"+mesh+"/new/virtualService",
			[][2]string{{"#name", "color.colors.local"}, {"#f-provider", "color-router"}}, "#metadata")
		e.createViaForm(t, "#/mesh/"+mesh+"/new/virtualGateway", [][2]string{{"#name", "gateway"}}, "#metadata")
		e.createViaForm(t, "#/mesh/"+mesh+"/new/gatewayRoute/gateway",
			[][2]string{{"#name", "gateway-route"}, {"#f-service", "color.colors.local"}}, "#metadata")
		e.screenshot(t, "gateway-route-detail")
		checkContrast(t, e, "gateway-route-detail")
		// Everything is in the API, as the CLI sees it.
		route := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualRouter/color-router/routes/color-route", nil)
		if got := jsonString(route["spec"]); !strings.Contains(got, `"weightedTargets":[{"virtualNode":"blue","weight":4},{"virtualNode":"red","weight":1}]`) {
			t.Fatalf("route spec: %s", got)
		}
		svc := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualServices/color.colors.local", nil)
		if got := jsonString(svc["spec"]); got != `{"provider":{"virtualRouter":{"virtualRouterName":"color-router"}}}` {
			t.Fatalf("service spec: %s", got)
		}
		e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualGateway/gateway/gatewayRoutes/gateway-route", nil)
	})

	t.Run("a deep link loads its view's code", func(t *testing.T) {
		// A route's page opened directly, as from a bookmark: its view's
		// chunk (details, forms, the weights editor) is fetched before it
		// is drawn, and the topology's is not.
		e.run(t, "open a route's page directly", chromedp.Navigate("about:blank"),
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/route/color-router/color-route"), chromedp.WaitVisible(css("#save-weights")))
		js := eval[[]string](t, e, scriptsBeforeView)
		t.Logf("the route's page fetched, before it was drawn: %v", js)
		if !slices.ContainsFunc(js, func(p string) bool { return strings.HasPrefix(p, "/console/b/mesh-") }) {
			t.Fatalf("the route's page was drawn without its chunk: %v", js)
		}
		if slices.ContainsFunc(js, func(p string) bool { return strings.HasPrefix(p, "/console/b/topology-") }) {
			t.Fatalf("the route's page fetched the topology's code before it was drawn: %v", js)
		}
		if v := eval[string](t, e, `document.getElementById('version').textContent`); v == "" {
			t.Fatal("the route's page shows no version")
		}
	})

	t.Run("inline validation error, nothing written", func(t *testing.T) {
		bad := `{"listeners":[{"portMapping":{"port":70000,"protocol":"http"}}]}`
		// What the API itself answers to the same request.
		code, want := e.api(t, "PUT", "/v20190125/meshes/"+mesh+"/virtualNodes", map[string]any{"virtualNodeName": "bad", "spec": map[string]any{"listeners": []any{map[string]any{"portMapping": map[string]any{"port": 70000, "protocol": "http"}}}}})
		if code != 400 {
			t.Fatalf("the API accepted a bad spec: %d %v", code, want)
		}
		e.run(t, "submit a bad spec",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/new/virtualNode"),
			chromedp.WaitVisible(css("#submit")),
			chromedp.SendKeys(css("#name"), "bad"),
			chromedp.SetValue(css("#spec-json"), bad),
			chromedp.Click(css("#submit")),
			chromedp.WaitVisible(css("#form-result .api-error")))
		shown := value(t, e, "read the error", chromedp.Text(css("#form-result .api-error")))
		if wantText := fmt.Sprintf("%s: %s", want["__type"], want["message"]); shown != wantText {
			t.Fatalf("inline error %q, want the API's %q", shown, wantText)
		}
		t.Logf("shown inline: %s", shown)
		e.screenshot(t, "validation-error")
		checkContrast(t, e, "validation-error")
		if code, _ := e.api(t, "GET", "/v20190125/meshes/"+mesh+"/virtualNodes/bad", nil); code != 404 {
			t.Fatalf("the bad node exists after its create failed: %d", code)
		}
	})

	t.Run("topology live", func(t *testing.T) {
		e.run(t, "open the topology",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:red"]`)))
		ids := eval[[]string](t, e, `[...document.querySelectorAll('#topology g.n')].map(g => g.dataset.id).sort()`)
		want := []string{"route:color-router/color-route", "virtualGateway:gateway", "virtualNode:blue", "virtualNode:red", "virtualRouter:color-router", "virtualService:color.colors.local"}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Fatalf("graph nodes %v, want %v", ids, want)
		}
		if edges := eval[int](t, e, `document.querySelectorAll('#topology path.e').length`); edges != 5 { // gateway→service→router→route→blue, →red
			t.Fatalf("%d edges, want 5", edges)
		}
		e.run(t, "wait for the event stream", poll(`document.getElementById('live').textContent.startsWith('live')`))
		// A node added through the API appears without a reload.
		start := time.Now()
		e.mustAPI(t, "PUT", "/v20190125/meshes/"+mesh+"/virtualNodes", map[string]any{"virtualNodeName": "green",
			"spec": map[string]any{"listeners": []any{map[string]any{"portMapping": map[string]any{"port": 8080, "protocol": "http"}}}, "serviceDiscovery": map[string]any{"dns": map[string]any{"hostname": "green.colors.local"}}}})
		e.run(t, "see green appear", chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:green"]`)))
		t.Logf("a node created through the API was on the graph %v later", time.Since(start).Round(time.Millisecond))
		e.screenshot(t, "topology")
	})

	t.Run("shift traffic 4:1 to 1:1 with the slider", func(t *testing.T) {
		// The tutorial's tasks, each on a host of its own: blue's and
		// red's applications with their proxies, and the gateway, which
		// resolves the nodes' DNS names to their hosts. Requests go
		// through the gateway, which splits them by the route's weights
		// and reports its load to weft server (LRS, every second).
		blue := e.addHost(t, "blue", nil)
		red := e.addHost(t, "red", nil)
		gw := e.addHost(t, "gw", map[string]netip.Addr{"blue.colors.local": blue.Addr, "red.colors.local": red.Addr})
		serveApp(t, blue, ":8080", "blue")
		serveApp(t, red, ":8080", "red")
		e.startProxyOn(t, blue, "mesh/"+mesh+"/virtualNode/blue")
		e.startProxyOn(t, red, "mesh/"+mesh+"/virtualNode/red")
		e.startProxyOn(t, gw, "mesh/"+mesh+"/virtualGateway/gateway")
		waitFor(t, 30*time.Second, "three proxies connected and ACKed", func() bool { return e.proxies(t).allAcked(mesh, 3) })
		load := sendLoad(t, "http://"+gw.Addr.String()+":8080/", loadRate)
		waitFor(t, 30*time.Second, "both applications answering through the gateway", func() bool {
			by, _ := load.snapshot()
			return by["blue"] > 0 && by["red"] > 0
		})
		e.runWithin(t, time.Minute, "the topology shows the traffic split 4:1",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:red"]`)),
			pollFor(45*time.Second, blueShare(0.8, shareTolerance)))
		t.Logf("4:1 on the graph: %s; answers so far %s", edgeLabels(t, e), loadSummary(load))
		e.screenshot(t, "topology-traffic-4-1")
		before := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualRouter/color-router/routes/color-route", nil)
		v0 := before["metadata"].(map[string]any)["version"].(float64)
		e.run(t, "move the red slider from 1 to 4 with the keyboard and save",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/route/color-router/color-route"),
			chromedp.WaitVisible(css("#w-range-red")),
			chromedp.Focus(css("#w-range-red")),
			chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowRight),
			poll(`document.getElementById('w-num-red').value === '4'`),
			chromedp.Click(css("#save-weights")),
			chromedp.WaitVisible(css("#saved-version")),
			chromedp.WaitVisible(css(`#ack-status[data-all-acked="true"]`)))
		if stray := eval[bool](t, e, `document.getElementById('view').innerText.includes('null')`); stray {
			t.Fatal(`the route's page shows the text "null"`)
		}
		version := value(t, e, "saved version", chromedp.AttributeValue(css("#saved-version"), "data-version")).Value
		status := value(t, e, "ack status", chromedp.Text(css("#ack-status")))
		acked := eval[int](t, e, `document.querySelectorAll('#ack-table tr[data-acked="true"]').length`)
		if v, _ := strconv.ParseFloat(version, 64); v != v0+1 {
			t.Fatalf("saved version %s, want %v", version, v0+1)
		}
		if acked != 3 {
			t.Fatalf("%d proxies shown ACKed, want 3 (%s)", acked, status)
		}
		t.Logf("after saving: %s", status)
		e.screenshot(t, "route-weights")
		checkContrast(t, e, "route-weights")
		after := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualRouter/color-router/routes/color-route", nil)
		if got := jsonString(after["spec"]); !strings.Contains(got, `[{"virtualNode":"blue","weight":4},{"virtualNode":"red","weight":4}]`) {
			t.Fatalf("route after the slider: %s", got)
		}
		// The gateway follows the new weights, and so does the graph.
		e.runWithin(t, time.Minute, "the topology shows the traffic split 1:1",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:red"]`)),
			pollFor(45*time.Second, blueShare(0.5, shareTolerance)))
		t.Logf("1:1 on the graph: %s; answers so far %s", edgeLabels(t, e), loadSummary(load))
		if labels := edgeLabels(t, e); !trafficLabel.MatchString(labels) {
			t.Fatalf("edge labels %q: want requests/s, error ratio and p99", labels)
		}
		e.screenshot(t, "topology-traffic-1-1")
		checkContrast(t, e, "topology-traffic-1-1")
		// The proxies page lists them, filtered by node and by mesh.
		e.run(t, "proxies page",
			chromedp.Navigate(e.base+"/console/#/proxies"),
			chromedp.WaitVisible(css(`#proxies tr[data-node="mesh/`+mesh+`/virtualNode/red"]`)),
			chromedp.SendKeys(css("#filter-node"), "blue"))
		if rows := eval[int](t, e, `document.querySelectorAll('#proxies tbody tr').length`); rows != 1 {
			t.Fatalf("%d proxies shown for node filter blue, want 1", rows)
		}
		e.run(t, "clear the filter", poll(`(() => { const f = document.getElementById('filter-node'); f.value = ''; f.dispatchEvent(new Event('input')); return true; })()`))
		// And by mesh: another mesh's name shows none, this one's all three.
		rows := `document.querySelectorAll('#proxies tbody tr').length`
		e.run(t, "filter by another mesh", chromedp.SendKeys(css("#filter-mesh"), "no-such-mesh"), poll(rows+` === 0`))
		e.run(t, "filter by this mesh", poll(`(() => { const f = document.getElementById('filter-mesh'); f.value = '`+mesh+`'; f.dispatchEvent(new Event('input')); return true; })()`),
			poll(rows+` === 3`))
		e.run(t, "clear the mesh filter", poll(`(() => { const f = document.getElementById('filter-mesh'); f.value = ''; f.dispatchEvent(new Event('input')); return true; })()`))
		e.screenshot(t, "proxies")
		checkContrast(t, e, "proxies")
		e.run(t, "a node's page lists its proxies",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/virtualNode/red"),
			chromedp.WaitVisible(css(`#node-proxies tr[data-node="mesh/`+mesh+`/virtualNode/red"]`)))
		e.run(t, "topology with proxies", chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:red"]`)),
			poll(`[...document.querySelectorAll('#topology g.n.virtualNode text.sub')].filter(t => t.textContent.includes('ACK')).length === 2`))
		// Each node's tooltip names its proxy and the configuration it
		// ACKed, per type, as /v1/proxies has it.
		var want string
		for _, p := range e.proxies(t).Proxies {
			if p.Mesh == mesh && p.Kind == "virtualNode" && p.Name == "red" {
				want = p.NodeID + ": 1 replica(s); ACKed lds " + p.Types["lds"].Acked + ", rds " + p.Types["rds"].Acked
			}
		}
		if want == "" {
			t.Fatal("/v1/proxies has no proxy for red")
		}
		e.run(t, "red's tooltip", poll(`(document.querySelector('#topology g[data-id="virtualNode:red"] title') || {}).textContent?.startsWith(`+jsonString(want)+`)`))
		e.screenshot(t, "topology-proxies")
	})

	t.Run("Cloud Map discovery and a backend added in the console", func(t *testing.T) {
		// The tutorial's nodes find their tasks through Cloud Map: a
		// private DNS namespace, a service, a node that names them; then
		// red gets a backend on its page, as the tutorial does in App
		// Mesh's console.
		e.submitForm(t, "a private DNS namespace", "#/cloudmap",
			[][2]string{{"#ns-name", "colors.local"}, {"#ns-vpc", "vpc-0123456789abcdef0"}}, "#ns-create", `#namespaces tbody a`)
		e.run(t, "a service in it",
			chromedp.Click(css(`#namespaces tbody a`)),
			chromedp.WaitVisible(css("#svc-create")),
			chromedp.SendKeys(css("#svc-name"), "yellow"),
			chromedp.Click(css("#svc-create")),
			chromedp.WaitVisible(css(`#services tbody a`)))
		var nsID string
		for _, ns := range e.cloudMap(t, "ListNamespaces", map[string]any{})["Namespaces"].([]any) {
			if ns := ns.(map[string]any); ns["Name"] == "colors.local" && ns["Type"] == "DNS_PRIVATE" {
				nsID, _ = ns["Id"].(string)
			}
		}
		svcs := e.cloudMap(t, "ListServices", map[string]any{"Filters": []any{map[string]any{"Name": "NAMESPACE_ID", "Values": []string{nsID}}}})["Services"].([]any)
		if nsID == "" || len(svcs) != 1 || svcs[0].(map[string]any)["Name"] != "yellow" {
			t.Fatalf("Cloud Map after the console's forms: namespace %q, services %v", nsID, svcs)
		}
		e.run(t, "a node discovered through Cloud Map",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/new/virtualNode"),
			chromedp.WaitVisible(css("#submit")),
			chromedp.SendKeys(css("#name"), "yellow"),
			poll(`(() => { const s = document.getElementById('f-discovery'); s.value = 'awsCloudMap'; s.dispatchEvent(new Event('input')); return true; })()`),
			chromedp.SendKeys(css("#f-cmNamespace"), "colors.local"),
			chromedp.SendKeys(css("#f-cmService"), "yellow"),
			chromedp.Click(css("#submit")),
			chromedp.WaitVisible(css("#metadata")))
		node := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualNodes/yellow", nil)
		if got := jsonString(node["spec"].(map[string]any)["serviceDiscovery"]); got != `{"awsCloudMap":{"namespaceName":"colors.local","serviceName":"yellow"}}` {
			t.Fatalf("yellow's service discovery: %s", got)
		}
		e.run(t, "add a backend to red on its page",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/virtualNode/red"),
			chromedp.WaitVisible(css("#add-backend")),
			chromedp.SendKeys(css("#backend-name"), "color.colors.local"),
			chromedp.Click(css("#add-backend")),
			chromedp.WaitVisible(css(`#backends li[data-backend="color.colors.local"]`)))
		red := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualNodes/red", nil)
		if got := jsonString(red["spec"].(map[string]any)["backends"]); got != `[{"virtualService":{"virtualServiceName":"color.colors.local"}}]` {
			t.Fatalf("red's backends: %s", got)
		}
		e.run(t, "the backend on the graph",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology path.e.backend[data-from="virtualNode:red"][data-to="virtualService:color.colors.local"]`)))
		e.screenshot(t, "node-backends")
		checkContrast(t, e, "node-backends")
	})

	t.Run("a target added to the route and removed", func(t *testing.T) {
		routePath := "/v20190125/meshes/" + mesh + "/virtualRouter/color-router/routes/color-route"
		targets := func() string {
			r := e.mustAPI(t, "GET", routePath, nil)
			return jsonString(r["spec"].(map[string]any)["httpRoute"].(map[string]any)["action"].(map[string]any)["weightedTargets"])
		}
		e.run(t, "add yellow with weight 1 and save",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/route/color-router/color-route"),
			chromedp.WaitVisible(css("#w-add")),
			chromedp.SendKeys(css("#w-add-node"), "yellow"),
			chromedp.Click(css("#w-add")),
			chromedp.WaitVisible(css("#w-range-yellow")),
			chromedp.Click(css("#save-weights")),
			chromedp.WaitVisible(css("#saved-version")))
		if got := targets(); got != `[{"virtualNode":"blue","weight":4},{"virtualNode":"red","weight":4},{"virtualNode":"yellow","weight":1}]` {
			t.Fatalf("targets after adding yellow: %s", got)
		}
		e.screenshot(t, "route-target-added")
		e.run(t, "the new target on the graph",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology path.e[data-from="route:color-router/color-route"][data-to="virtualNode:yellow"]`)))
		e.run(t, "remove yellow and save",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/route/color-router/color-route"),
			chromedp.WaitVisible(css("#w-remove-yellow")),
			chromedp.Click(css("#w-remove-yellow")),
			poll(`!document.getElementById('w-range-yellow')`),
			chromedp.Click(css("#save-weights")),
			chromedp.WaitVisible(css("#saved-version")))
		if got := targets(); got != `[{"virtualNode":"blue","weight":4},{"virtualNode":"red","weight":4}]` {
			t.Fatalf("targets after removing yellow: %s", got)
		}
	})

	t.Run("delete blocked with ResourceInUseException", func(t *testing.T) {
		for _, c := range []struct{ hash, check string }{
			{"#/mesh/" + mesh + "/virtualRouter/color-router", "/v20190125/meshes/" + mesh + "/virtualRouters/color-router"},
			{"#/mesh/" + mesh + "/detail", "/v20190125/meshes/" + mesh},
		} {
			e.run(t, "delete "+c.hash,
				chromedp.Navigate(e.base+"/console/"+c.hash),
				chromedp.WaitVisible(css("#delete")),
				poll(`(window.confirm = () => true, true)`),
				chromedp.Click(css("#delete")),
				chromedp.WaitVisible(css(`#action-result .api-error[data-error-type="ResourceInUseException"]`)))
			shown := value(t, e, "read the error", chromedp.Text(css("#action-result .api-error")))
			t.Logf("delete refused: %s", shown)
			if code, _ := e.api(t, "GET", c.check, nil); code != 200 {
				t.Fatalf("%s is gone after a refused delete: %d", c.check, code)
			}
		}
		e.screenshot(t, "delete-in-use")
		checkContrast(t, e, "delete-in-use")
	})

	t.Run("a NACK shown with the proxy's message", func(t *testing.T) {
		// A proxy for blue; then blue's listener given a certificate file
		// that does not exist, written as the CLI would: the proxy NACKs
		// the listener with a message naming the file (and keeps serving
		// the last good one), which the graph and the proxies page show.
		e.startProxy(t, "nack", "mesh/"+mesh+"/virtualNode/blue")
		acked := `(() => { const g = document.querySelector('#topology g[data-id="virtualNode:blue"]');
			return !!g && !g.classList.contains('nack') && g.querySelector('text.sub').textContent.includes('ACK'); })()`
		e.runWithin(t, 40*time.Second, "blue's proxy ACKs", chromedp.Navigate(e.base+"/console/#/mesh/"+mesh), pollFor(30*time.Second, acked))
		nodePath := "/v20190125/meshes/" + mesh + "/virtualNodes/blue"
		spec := e.mustAPI(t, "GET", nodePath, nil)["spec"].(map[string]any)
		good := jsonString(spec)
		const missing = "/nonexistent/weft/chain.pem"
		var bad map[string]any
		json.Unmarshal([]byte(good), &bad)
		l := bad["listeners"].([]any)[0].(map[string]any)
		l["tls"] = map[string]any{"mode": "STRICT", "certificate": map[string]any{"file": map[string]any{"certificateChain": missing, "privateKey": "/nonexistent/weft/key.pem"}}}
		e.mustAPI(t, "PUT", nodePath, map[string]any{"spec": bad})
		e.runWithin(t, 40*time.Second, "blue NACKs on the graph", pollFor(30*time.Second, `(() => { const g = document.querySelector('#topology g[data-id="virtualNode:blue"]');
				return g.classList.contains('nack') && g.querySelector('text.sub').textContent.includes('NACK') &&
					g.querySelector('title').textContent.includes('last NACK: ') && g.querySelector('title').textContent.includes('`+missing+`'); })()`))
		e.screenshot(t, "topology-nack")
		e.run(t, "blue's NACK on the proxies page", chromedp.Navigate(e.base+"/console/#/proxies"),
			chromedp.WaitVisible(css(`#proxies tr[data-node="mesh/`+mesh+`/virtualNode/blue"] .api-error`)))
		if msg := eval[string](t, e, `document.querySelector('#proxies tr[data-node="mesh/`+mesh+`/virtualNode/blue"] .api-error').textContent`); !strings.HasPrefix(msg, "last NACK: ") || !strings.Contains(msg, missing) {
			t.Fatalf("blue's row says %q, want its NACK naming %s", msg, missing)
		}
		checkContrast(t, e, "proxies with a NACK")
		// The good spec again: blue ACKs it.
		var restore map[string]any
		json.Unmarshal([]byte(good), &restore)
		e.mustAPI(t, "PUT", nodePath, map[string]any{"spec": restore})
		e.runWithin(t, 40*time.Second, "blue ACKs again", chromedp.Navigate(e.base+"/console/#/mesh/"+mesh), pollFor(30*time.Second, acked))
	})

	t.Run("a translation error shown with the server's message", func(t *testing.T) {
		// A proxy for the gateway; then the gateway's listener moved to
		// port 15001, written as the CLI would. The API takes it (App Mesh
		// did not know the proxy's ports), but the gateway's proxy already
		// binds 15001 for its second hop (the egress listener): the
		// server's check of the translated listeners refuses the pair, the
		// proxy keeps its last configuration, and /v1/proxies gives the
		// reason as the proxy's error, which the graph and the proxies page
		// show. The first spec again clears it.
		const nodeID = "mesh/" + mesh + "/virtualGateway/gateway"
		e.startProxy(t, "translate", nodeID)
		gwSel := `#topology g[data-id="virtualGateway:gateway"]`
		acked := `(() => { const g = document.querySelector('` + gwSel + `');
			return !!g && !g.classList.contains('nack') && g.querySelector('text.sub').textContent.includes('ACK'); })()`
		e.runWithin(t, 40*time.Second, "the gateway's proxy ACKs", chromedp.Navigate(e.base+"/console/#/mesh/"+mesh), pollFor(30*time.Second, acked))
		gwPath := "/v20190125/meshes/" + mesh + "/virtualGateways/gateway"
		good := jsonString(e.mustAPI(t, "GET", gwPath, nil)["spec"])
		var bad map[string]any
		json.Unmarshal([]byte(good), &bad)
		bad["listeners"].([]any)[0].(map[string]any)["portMapping"].(map[string]any)["port"] = 15001
		e.mustAPI(t, "PUT", gwPath, map[string]any{"spec": bad})
		var msg string
		waitFor(t, 30*time.Second, "the gateway's translation error in /v1/proxies", func() bool {
			for _, p := range e.proxies(t).Proxies {
				if p.NodeID == nodeID {
					msg = p.Error
				}
			}
			return msg != ""
		})
		t.Logf("the server's error for %s: %s", nodeID, msg)
		if !strings.Contains(msg, "15001") {
			t.Fatalf("the error %q does not name the port", msg)
		}
		msgJS := jsonString(msg)
		e.runWithin(t, 40*time.Second, "the gateway's error on the graph", pollFor(30*time.Second, `(() => { const g = document.querySelector('`+gwSel+`');
				return g.classList.contains('nack') && g.querySelector('text.sub').textContent.includes('error') &&
					g.querySelector('title').textContent.includes('; error: ' + `+msgJS+`); })()`))
		e.screenshot(t, "topology-translation-error")
		row := `#proxies tr[data-node="` + nodeID + `"]`
		e.run(t, "the gateway's error on the proxies page", chromedp.Navigate(e.base+"/console/#/proxies"), chromedp.WaitVisible(css(row+" .api-error")))
		if shown := eval[string](t, e, `document.querySelector('`+row+` .api-error').textContent`); shown != msg {
			t.Fatalf("the gateway's row says %q, want the server's message %q", shown, msg)
		}
		if state := eval[string](t, e, `document.querySelector('`+row+` .badge').textContent`); state != "error" {
			t.Fatalf("the gateway's row's state is %q, want error", state)
		}
		checkContrast(t, e, "proxies with a translation error")
		// The first spec again: the error clears, on both pages.
		var restore map[string]any
		json.Unmarshal([]byte(good), &restore)
		e.mustAPI(t, "PUT", gwPath, map[string]any{"spec": restore})
		e.runWithin(t, 40*time.Second, "the error cleared on the proxies page", pollFor(30*time.Second,
			`(() => { const r = document.querySelector('`+row+`'); return !!r && !r.querySelector('.api-error') && r.querySelector('.badge').textContent === 'ACK'; })()`))
		e.runWithin(t, 40*time.Second, "the gateway ACKs again on the graph", chromedp.Navigate(e.base+"/console/#/mesh/"+mesh), pollFor(30*time.Second, acked))
	})

	t.Run("narrow window and keyboard", func(t *testing.T) {
		e.run(t, "narrow",
			chromedp.EmulateViewport(420, 860),
			chromedp.Navigate("about:blank"),
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/route/color-router/color-route"),
			chromedp.WaitVisible(css("#w-range-red")),
			chromedp.KeyEvent(kb.Tab))
		if focused := eval[string](t, e, `document.activeElement.textContent`); focused != "Skip to content" {
			t.Fatalf("first Tab stop %q, want the skip link", focused)
		}
		e.screenshot(t, "narrow-route")
		checkContrast(t, e, "narrow-route")
		e.run(t, "wide again", chromedp.EmulateViewport(1280, 860))
	})
}
