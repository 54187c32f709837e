package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// listProbe runs in every document before the page's own scripts: it
// notes when the meshes list (#list-mesh) is first in the document,
// whoever put it there (the HTML parser or the page's code), when the
// frame that draws it starts (the next animation frame), and when it was
// first painted: its title and header cells carry an elementtiming
// attribute (Element Timing API), set as soon as they are in the
// document, so the browser reports when they were first shown.
const listProbe = `(() => {
	const t = {};
	window.__weftList = t;
	new PerformanceObserver((l) => {
		for (const e of l.getEntries()) if (e.identifier === 'weft-list' && t.paint === undefined) t.paint = e.renderTime || e.startTime;
	}).observe({ type: 'element', buffered: true });
	const mo = new MutationObserver(() => {
		const list = document.getElementById('list-mesh');
		if (!list) return;
		for (const e of document.querySelectorAll('#list-mesh th:not([elementtiming]), #view > h1:not([elementtiming])')) e.setAttribute('elementtiming', 'weft-list');
		if (t.dom === undefined) {
			t.dom = performance.now();
			requestAnimationFrame(() => { t.frame = performance.now(); });
		}
	});
	mo.observe(document, { childList: true, subtree: true });
})()`

// firstPageTimes reads, in the page, the first page's times in ms from the
// navigation's request start.
const firstPageTimes = `(() => {
	const n = performance.getEntriesByType('navigation')[0], t0 = n.requestStart;
	const mark = (m) => { const e = performance.getEntriesByName(m)[0]; return e ? e.startTime - t0 : -1; };
	const fcp = performance.getEntriesByName('first-contentful-paint')[0];
	const l = window.__weftList || {};
	return { before: t0, response: n.responseEnd - t0, interactive: n.domInteractive - t0,
		listDOM: l.dom === undefined ? -1 : l.dom - t0, listFrame: l.frame === undefined ? -1 : l.frame - t0,
		listPaint: l.paint === undefined ? -1 : l.paint - t0,
		fcp: fcp ? fcp.startTime - t0 : -1, app: mark('weft-app'), view: mark('weft-view'),
		requests: performance.getEntriesByType('resource').filter((r) => r.startTime < (l.frame || 0)).length + 1 }; })()`

// TestConsoleFirstPage measures the console's first page, the meshes
// list of a server with three meshes: a browser started for the run
// loads it once (nothing cached, the browser's first page), then
// firstPageSamples times more with the HTTP cache emptied before each;
// with WEFT_FIRST_PAGE_BROWSERS=n, n browsers one after the other, each
// new (a new profile and process), so that a run counts n first loads.
// Each load is timed from the navigation's request start until the list
// is painted, is in the document and the frame that draws it starts, the
// same way whatever draws it. Before each, in the same browser: /healthz
// (3 bytes) from the same listener, request start to load, and the floor,
// a trivial HTML page's first paint. It logs the times and asserts what
// the page holds, never how fast it was (docs/bench/console.md).
func TestConsoleFirstPage(t *testing.T) {
	e := newEnv(t)
	for _, m := range []string{"alpha", "beta", "gamma"} {
		e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": m})
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	clearCache := chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, network.ClearBrowserCache, cdp.Empty{})
		return chromedp.Void{}, err
	})
	samples := 5
	if s, err := strconv.Atoi(os.Getenv("WEFT_FIRST_PAGE_SAMPLES")); err == nil && s >= 0 {
		samples = s
	}
	browsers := 1
	if s, err := strconv.Atoi(os.Getenv("WEFT_FIRST_PAGE_BROWSERS")); err == nil && s >= 1 {
		browsers = s
	}
	// The floor: a trivial HTML page (one line of text, no script, no
	// style), served from a listener of this process as the server's is.
	trivial := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "<!doctype html><html lang=\"en\"><title>t</title><p>Meshes</p></html>")
	}))
	defer trivial.Close()
	var lists, colds, warms, frames, bases, floors, coldFloors []float64
	for b := 0; b < browsers; b++ {
		if b > 0 {
			bctx, stop := startBrowser(t, chromium)
			e.browser = bctx
			defer stop()
		}
		value(t, e, "add the list probe", chromedp.Action[page.ScriptIdentifier](func(ctx context.Context, tg *chromedp.Target) (page.ScriptIdentifier, error) {
			r, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: listProbe})
			return r.Identifier, err
		}))
		for i := 0; i <= samples; i++ {
			e.run(t, "baseline", clearCache, chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/healthz"))
			base := eval[map[string]float64](t, e, `(() => { const n = performance.getEntriesByType('navigation')[0];
			return { load: n.loadEventEnd - n.requestStart }; })()`)
			e.run(t, "trivial page", clearCache, chromedp.Navigate("about:blank"), chromedp.Navigate(trivial.URL),
				chromedp.WaitReady(css("p")), poll(`performance.getEntriesByName('first-contentful-paint').length > 0`))
			floor := eval[float64](t, e, `performance.getEntriesByName('first-contentful-paint')[0].startTime - performance.getEntriesByType('navigation')[0].requestStart`)
			e.run(t, "the meshes page", clearCache, chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"),
				chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/gamma"]`)), poll(`window.__weftList.frame !== undefined && window.__weftList.paint !== undefined && performance.getEntriesByName('weft-view').length > 0 &&
				performance.getEntriesByName('first-contentful-paint').length > 0`))
			f := eval[map[string]float64](t, e, firstPageTimes)
			what := fmt.Sprintf("browser %d, cold browser", b+1)
			if i > 0 {
				what = fmt.Sprintf("browser %d, sample %d, HTTP cache emptied", b+1, i)
				warms = append(warms, f["listPaint"])
			} else {
				colds = append(colds, f["listPaint"])
				coldFloors = append(coldFloors, floor)
			}
			t.Logf("first page (%s), ms from the request start: meshes list painted %.1f, in the document %.1f, its frame started %.1f; first paint %.1f; "+
				"index response end %.1f, DOM interactive %.1f, app module running %.1f, module's view drawn %.1f; %.0f requests; "+
				"%.1f ms before the request; baseline /healthz loaded %.1f, a trivial HTML page painted %.1f",
				what, f["listPaint"], f["listDOM"], f["listFrame"], f["fcp"], f["response"], f["interactive"], f["app"], f["view"], f["requests"], f["before"], base["load"], floor)
			lists = append(lists, f["listPaint"])
			frames = append(frames, f["listFrame"])
			bases = append(bases, base["load"])
			floors = append(floors, floor)
		}
		if n := eval[int](t, e, `document.querySelectorAll('#list-mesh tbody tr').length`); n != 3 {
			t.Fatalf("the list shows %d meshes, want 3", n)
		}
	}
	summary := func(v []float64) string {
		if len(v) == 0 {
			return "none"
		}
		under := 0
		for _, x := range v {
			if x < 200 {
				under++
			}
		}
		return fmt.Sprintf("median %.1f ms (%.1f-%.1f), %d of %d under 200 ms", median(v), minOf(v), maxOf(v), under, len(v))
	}
	t.Logf("first page: meshes list painted, all loads: %s; browsers' first loads: %s; HTTP cache emptied: %s", summary(lists), summary(colds), summary(warms))
	t.Logf("first page: its frame started, median %.1f ms; baseline /healthz loaded, median %.1f ms; a trivial HTML page painted, median %.1f ms (%.1f-%.1f), on the browsers' first loads median %.1f ms",
		median(frames), median(bases), median(floors), minOf(floors), maxOf(floors), median(coldFloors))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
