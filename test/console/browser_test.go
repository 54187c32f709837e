package console

import (
	"context"
	"fmt"
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
	actions := []chromedp.Action[chromedp.Void]{chromedp.Navigate(e.base + "/console/" + hash), chromedp.WaitVisible(css(submit))}
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
	p := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := p(ctx, tg)
		return chromedp.Void{}, err
	}
}

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
		e.run(t, "load the meshes page", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"), chromedp.WaitVisible(css("#list-mesh")))
		nav := eval[map[string]float64](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0];
			const rs = performance.getEntriesByType('resource');
			const view = performance.getEntriesByName('weft-view')[0].startTime;
			return { load: n.loadEventEnd - n.startTime, view, own: view - n.requestStart, before: n.requestStart,
			  // the first page's own: not the other views' modules, fetched once it is drawn
			  bytes: n.encodedBodySize + rs.filter((r) => r.startTime < view).reduce((s, r) => s + r.encodedBodySize, 0),
			  requests: rs.filter((r) => r.startTime < view).length + 1 }; })()`)
		t.Logf("first page (cold cache, loopback): meshes list drawn %.1f ms after the request started (%.1f ms after navigation start, of which %.1f ms before the request); load event at %.1f ms; baseline: /healthz loaded %.1f ms after its request started (%.1f ms after navigation start); %.0f requests, %.0f bytes on the wire",
			nav["own"], nav["view"], nav["before"], nav["load"], base["own"], base["load"], nav["requests"], nav["bytes"])
		e.screenshot(t, "meshes-empty")
		// Again, with the assets in the cache.
		e.run(t, "reload", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"), chromedp.WaitVisible(css("#list-mesh")))
		nav = eval[map[string]float64](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0];
			const view = performance.getEntriesByName('weft-view')[0].startTime;
			return { own: view - n.requestStart, view, requests: performance.getEntriesByType('resource').length + 1 }; })()`)
		t.Logf("second load (warm cache): meshes list drawn %.1f ms after the request started (%.1f ms after navigation start); %.0f requests", nav["own"], nav["view"], nav["requests"])
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
		e.startProxy(t, "blue", "mesh/"+mesh+"/virtualNode/blue")
		e.startProxy(t, "red", "mesh/"+mesh+"/virtualNode/red")
		e.startProxy(t, "gw", "mesh/"+mesh+"/virtualGateway/gateway")
		waitFor(t, 30*time.Second, "three proxies connected and ACKed", func() bool { return e.proxies(t).allAcked(mesh, 3) })
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
		after := e.mustAPI(t, "GET", "/v20190125/meshes/"+mesh+"/virtualRouter/color-router/routes/color-route", nil)
		if got := jsonString(after["spec"]); !strings.Contains(got, `[{"virtualNode":"blue","weight":4},{"virtualNode":"red","weight":4}]`) {
			t.Fatalf("route after the slider: %s", got)
		}
		// The proxies page lists them, filtered by node.
		e.run(t, "proxies page",
			chromedp.Navigate(e.base+"/console/#/proxies"),
			chromedp.WaitVisible(css(`#proxies tr[data-node="mesh/`+mesh+`/virtualNode/red"]`)),
			chromedp.SendKeys(css("#filter-node"), "blue"))
		if rows := eval[int](t, e, `document.querySelectorAll('#proxies tbody tr').length`); rows != 1 {
			t.Fatalf("%d proxies shown for node filter blue, want 1", rows)
		}
		e.run(t, "clear the filter", poll(`(() => { const f = document.getElementById('filter-node'); f.value = ''; f.dispatchEvent(new Event('input')); return true; })()`))
		e.screenshot(t, "proxies")
		e.run(t, "a node's page lists its proxies",
			chromedp.Navigate(e.base+"/console/#/mesh/"+mesh+"/virtualNode/red"),
			chromedp.WaitVisible(css(`#node-proxies tr[data-node="mesh/`+mesh+`/virtualNode/red"]`)))
		e.run(t, "topology with proxies", chromedp.Navigate(e.base+"/console/#/mesh/"+mesh),
			chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:red"]`)),
			poll(`[...document.querySelectorAll('#topology g.n.virtualNode text.sub')].filter(t => t.textContent.includes('ACK')).length === 2`))
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
	})

	t.Run("traffic on the edges", func(t *testing.T) {
		// GET /v1/traffic's shape (from another part of weft; absent here)
		// drawn on the graph's edges by the console's own code.
		got := value(t, e, "decorate", chromedp.Evaluate[[]string](`(async () => {
			const t = await import('/console/js/topology.js');
			const g = t.build('m', { gateways: [{ virtualGatewayName: 'gw' }], routers: [{ virtualRouterName: 'r' }],
				svcD: [{ virtualServiceName: 's', spec: { provider: { virtualRouter: { virtualRouterName: 'r' } } } }],
				routeD: [{ routeName: 'rt', virtualRouterName: 'r', spec: { httpRoute: { action: { weightedTargets: [{ virtualNode: 'a', weight: 4 }, { virtualNode: 'b', weight: 1 }] } } } }],
				nodeD: [{ virtualNodeName: 'a', spec: {} }, { virtualNodeName: 'b', spec: {} }],
				gwrD: [{ gatewayRouteName: 'g', virtualGatewayName: 'gw', spec: { httpRoute: { action: { target: { virtualService: { virtualServiceName: 's' } } } } } }] });
			t.decorate(g, [], { mesh: 'm', windowSeconds: 30, generatedAt: '2026-12-02T15:00:00Z', edges: [
				{ source: { kind: 'virtualGateway', name: 'gw' }, virtualService: 's', target: { kind: 'virtualNode', name: 'a' }, requestsPerSecond: 8, errorRatio: 0.01, p50Ms: 1.2, p99Ms: 3.5, lastReport: '2026-12-02T15:00:00Z' },
				{ source: { kind: 'virtualGateway', name: 'gw' }, virtualService: 's', target: { kind: 'virtualNode', name: 'b' }, requestsPerSecond: 2, errorRatio: 0, p50Ms: null, p99Ms: null, lastReport: '2026-12-02T15:00:00Z' },
				{ source: { kind: 'virtualGateway', name: 'gw' }, virtualService: 'other', target: { kind: 'virtualNode', name: 'b' }, requestsPerSecond: 100, errorRatio: 0.5, p50Ms: null, p99Ms: null, lastReport: '2026-12-02T15:00:00Z' }] });
			return g.edges.filter((x) => x.label).map((x) => x.from + ' > ' + x.to + ': ' + x.label).sort();
		})()`, chromedp.EvalAwaitPromise))
		want := []string{
			"route:r/rt > virtualNode:a: weight 4 (80%) · 8.0 rps · 1.0% err · p99 3.5 ms",
			"route:r/rt > virtualNode:b: weight 1 (20%) · 2.0 rps · 0.0% err",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("edge labels:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
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
		e.run(t, "wide again", chromedp.EmulateViewport(1280, 860))
	})
}
