package console

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// contrastCheck lists, in the page shown, every visible text of the page's
// HTML (not the graph's SVG) whose colour is below WCAG 2's AA contrast
// against the background it is drawn on (backgrounds composited up the
// tree, on white): 4.5:1, or 3:1 for large text (24 px, or 18.66 px
// bold), scrolled into view or not. Disabled controls and text placed
// off the page (the skip link until it has focus) are exempt, as WCAG
// has them.
const contrastCheck = `(() => {
	const parse = (s) => { const m = /rgba?\(([^)]+)\)/.exec(s); if (!m) return null;
		const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
	const lum = (c) => { const [r, g, b] = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
		return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
	const under = (el) => { const layers = [];
		for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
		let out = [255, 255, 255];
		for (const c of layers.reverse()) out = out.map((v, j) => c[j] * c[3] + v * (1 - c[3]));
		return out; };
	const bad = [], seen = new Set(), w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
	let checked = 0;
	for (let n = w.nextNode(); n; n = w.nextNode()) {
		const el = n.parentElement;
		if (!n.textContent.trim() || seen.has(el) || el.closest('svg') || el.closest(':disabled')) continue;
		seen.add(el);
		const r = el.getBoundingClientRect(), st = getComputedStyle(el);
		if (r.width === 0 || r.height === 0 || r.right <= 0 || st.visibility !== 'visible') continue;
		const bg = under(el), fg = parse(st.color);
		const c = fg.slice(0, 3).map((v, j) => v * fg[3] + bg[j] * (1 - fg[3]));
		const a = lum(c), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
		const size = parseFloat(st.fontSize), need = size >= 24 || (parseInt(st.fontWeight) >= 700 && size >= 18.66) ? 3 : 4.5;
		checked++;
		if (ratio < need) bad.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') + ' "' + n.textContent.trim().slice(0, 40) + '": ' + ratio.toFixed(2) + ' < ' + need);
	}
	return { checked, bad };
})()`

// checkContrast fails the test if a visible text of the page is below AA
// contrast (contrastCheck).
func checkContrast(t *testing.T, e *env, page string) {
	t.Helper()
	r := eval[struct {
		Checked int      `json:"checked"`
		Bad     []string `json:"bad"`
	}](t, e, contrastCheck)
	if r.Checked == 0 {
		t.Fatalf("%s: no text checked for contrast", page)
	}
	if len(r.Bad) > 0 {
		t.Fatalf("%s: text below WCAG AA contrast:\n%s", page, strings.Join(r.Bad, "\n"))
	}
	t.Logf("%s: %d texts at WCAG AA contrast or above", page, r.Checked)
}

// TestConsoleListsAndTags: a list longer than a page (55 virtual nodes,
// 50 a page) shows the first 50 and says there are more, "Load more"
// reads the rest with the API's nextToken, and search filters what was
// loaded; a node's whole spec is edited as JSON and saved; a mesh's page
// adds two tags and removes one, each read back through the API. Every
// text of the pages passed (the meshes list, the nodes list, a node's
// page, the topology, the mesh's page) has WCAG AA contrast, in a wide
// and in a narrow window.
func TestConsoleListsAndTags(t *testing.T) {
	e := newEnv(t)
	e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": "lists"})
	for i := range 55 {
		e.mustAPI(t, "PUT", "/v20190125/meshes/lists/virtualNodes", map[string]any{"virtualNodeName": fmt.Sprintf("n-%02d", i), "spec": map[string]any{}})
	}
	e.run(t, "the meshes page", chromedp.Navigate(e.base+"/console/"), chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/lists"]`)),
		poll(`performance.getEntriesByName('weft-view').length > 0`))
	checkContrast(t, e, "the meshes list")
	// The check fails where it should: grey text on white (2.0:1).
	if r := eval[map[string]any](t, e, `(() => { const s = document.createElement('p'); s.textContent = 'faint'; s.style.color = '#aaa';
		document.getElementById('view').append(s); const r = `+contrastCheck+`; s.remove(); return r; })()`); len(r["bad"].([]any)) != 1 {
		t.Fatalf("grey text on white: %v, want one text below AA", r["bad"])
	}
	rows := `document.querySelectorAll('#list-virtualNode tbody tr').length`
	status := `document.querySelector('#view .status-line').textContent`
	e.run(t, "the nodes list", chromedp.Navigate(e.base+"/console/#/mesh/lists/list/virtualNode"),
		chromedp.WaitVisible(css(`#list-virtualNode a[href="#/mesh/lists/virtualNode/n-49"]`)))
	if n, s := eval[int](t, e, rows), eval[string](t, e, status); n != 50 || s != "50 shown of 50 loaded (more on the server)" ||
		!eval[bool](t, e, `!document.getElementById('more-virtualNode').hidden`) {
		t.Fatalf("first page of the list: %d rows, %q", n, s)
	}
	checkContrast(t, e, "the nodes list")
	e.run(t, "load more", chromedp.Click(css("#more-virtualNode")), poll(rows+` === 55`))
	if s := eval[string](t, e, status); s != "55 shown of 55 loaded" || !eval[bool](t, e, `document.getElementById('more-virtualNode').hidden`) {
		t.Fatalf("after load more: %q", s)
	}
	e.run(t, "search", chromedp.SendKeys(css(`#view input[type="search"]`), "n-5"), poll(rows+` === 5`))
	got := eval[[]string](t, e, `[...document.querySelectorAll('#list-virtualNode tbody a')].map((a) => a.textContent)`)
	if want := []string{"n-50", "n-51", "n-52", "n-53", "n-54"}; !slices.Equal(got, want) {
		t.Fatalf("search n-5: %q, want %q", got, want)
	}
	if s := eval[string](t, e, status); s != "5 shown of 55 loaded" {
		t.Fatalf("search n-5: %q", s)
	}
	// A node's whole spec edited as JSON and saved: the API has it, one
	// version more.
	e.run(t, "a node's page", chromedp.Navigate(e.base+"/console/#/mesh/lists/virtualNode/n-54"), chromedp.WaitVisible(css("#spec-json")),
		poll(`(() => { document.getElementById('spec-json').value = '{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}'; return true; })()`),
		chromedp.Click(css("#save-spec")), chromedp.WaitVisible(css("#action-result .api-ok")))
	node := e.mustAPI(t, "GET", "/v20190125/meshes/lists/virtualNodes/n-54", nil)
	if v := node["metadata"].(map[string]any)["version"]; v != 2.0 || !strings.Contains(jsonString(node["spec"]), `"port":8080`) {
		t.Fatalf("after saving the spec: version %v, spec %s", v, jsonString(node["spec"]))
	}
	if s := eval[string](t, e, `document.querySelector('#action-result .api-ok').textContent + ' ' + document.getElementById('version').textContent`); s != "Saved: version 2. 2" {
		t.Fatalf("the page says %q after saving the spec", s)
	}
	checkContrast(t, e, "a node's page")
	e.run(t, "the topology", chromedp.Navigate(e.base+"/console/#/mesh/lists"), chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:n-54"]`)))
	checkContrast(t, e, "the topology")

	arn := "arn:aws:appmesh:us-east-1:111122223333:mesh/lists"
	tags := func() map[string]string {
		out := e.mustAPI(t, "GET", "/v20190125/tags?resourceArn="+url.QueryEscape(arn), nil)
		m := map[string]string{}
		for _, v := range out["tags"].([]any) {
			kv := v.(map[string]any)
			m[kv["key"].(string)] = kv["value"].(string)
		}
		return m
	}
	tagRows := `[...document.querySelector('#new-tags').closest('section').querySelectorAll('tbody tr')].map((r) => r.cells[0].textContent + '=' + r.cells[1].textContent).sort().join(',')`
	e.run(t, "the mesh's page", chromedp.Navigate(e.base+"/console/#/mesh/lists/detail"), chromedp.WaitVisible(css("#new-tags")))
	e.run(t, "add two tags", chromedp.SendKeys(css("#new-tags"), "team=blue, env=dev"),
		chromedp.Click(css(`#new-tags ~ button[type="submit"]`)), poll(tagRows+` === 'env=dev,team=blue'`))
	if m := tags(); len(m) != 2 || m["team"] != "blue" || m["env"] != "dev" {
		t.Fatalf("the API has the tags %v, want team=blue and env=dev", m)
	}
	checkContrast(t, e, "the mesh's page")
	e.run(t, "remove a tag", chromedp.Click(`//section[.//input[@id="new-tags"]]//tr[td[1]="env"]//button`), poll(tagRows+` === 'team=blue'`))
	if m := tags(); len(m) != 1 || m["team"] != "blue" {
		t.Fatalf("the API has the tags %v, want team=blue alone", m)
	}

	e.run(t, "narrow", chromedp.EmulateViewport(420, 860), chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"),
		chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/lists"]`)))
	checkContrast(t, e, "the meshes list, narrow")
	e.run(t, "narrow nodes list", chromedp.Navigate(e.base+"/console/#/mesh/lists/list/virtualNode"), chromedp.WaitVisible(css(`#list-virtualNode`)))
	checkContrast(t, e, "the nodes list, narrow")
	e.run(t, "narrow mesh page", chromedp.Navigate(e.base+"/console/#/mesh/lists/detail"), chromedp.WaitVisible(css("#new-tags")))
	checkContrast(t, e, "the mesh's page, narrow")
}
