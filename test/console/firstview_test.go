package console

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// scripts turns the page's scripts off or on (as a browser with
// JavaScript disabled).
func scripts(on bool) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on})
		return chromedp.Void{}, err
	}
}

// withoutScripts runs f with the page's scripts off, then leaves the
// page it loaded (a link to it would only change its fragment, and its
// scripts would never run).
func (e *env) withoutScripts(t *testing.T, f func()) {
	t.Helper()
	e.run(t, "scripts off", scripts(false))
	defer e.run(t, "scripts on", chromedp.Navigate("about:blank"), scripts(true))
	f()
}

// viewHTML is the view and the who bar as the browser holds them.
const viewHTML = `document.getElementById('who').innerHTML + '\n' + document.getElementById('view').innerHTML`

// TestConsoleFirstViewServerDrawn: the meshes list is in /console/'s HTML,
// drawn before any script runs, every name escaped; the page's module
// then takes it over as it is (the same elements, the same DOM, from the
// answer in the page, without asking the API again) and the list works
// as before; a link to another view never shows the server's list.
func TestConsoleFirstViewServerDrawn(t *testing.T) {
	e := newEnv(t)
	const odd = `a<b&c"d`
	for _, m := range []string{odd, "plain"} {
		e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": m})
	}

	// The HTML itself: the names escaped, in text and in attributes.
	resp, err := http.Get(e.base + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if !strings.Contains(body, `<a href="#/mesh/a%3Cb%26c%22d">a&lt;b&amp;c&#34;d</a>`) || strings.Contains(body, odd) ||
		resp.Header.Get("Cache-Control") != "no-store" || !strings.Contains(resp.Header.Get("Vary"), "Cookie") {
		t.Fatalf("GET /console/: %v\n%s", resp.Header, body)
	}

	// No script runs: the list is there, with the names as they are.
	var drawn string
	e.withoutScripts(t, func() {
		e.run(t, "the meshes page without scripts", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"),
			chromedp.WaitVisible(css("#list-mesh")))
		names := eval[[]string](t, e, `[...document.querySelectorAll('#list-mesh tbody tr td:first-child a')].map((a) => a.textContent + ' ' + a.getAttribute('href'))`)
		if strings.Join(names, ", ") != odd+" #/mesh/a%3Cb%26c%22d, plain #/mesh/plain" {
			t.Fatalf("the list without scripts: %q", names)
		}
		if eval[bool](t, e, `performance.getEntriesByName('weft-app').length > 0`) {
			t.Fatal("the module ran with scripts off")
		}
		drawn = eval[string](t, e, viewHTML)
		e.screenshot(t, "meshes-server-drawn")
	})

	// A probe, in every page from here on, notes the list the HTML
	// parser put in the page, before the module ran, and whether #view
	// was visible then.
	probe := value(t, e, "add the probe", chromedp.Action[page.ScriptIdentifier](func(ctx context.Context, tg *chromedp.Target) (page.ScriptIdentifier, error) {
		r, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `(() => {
			window.__weftCSP = [];
			document.addEventListener('securitypolicyviolation', (e) => window.__weftCSP.push(e.violatedDirective + ' ' + e.blockedURI));
			const mo = new MutationObserver(() => {
				const v = document.getElementById('view'), l = document.getElementById('list-mesh');
				if (v && l && window.__weftServerList === undefined) {
					window.__weftServerList = performance.getEntriesByName('weft-app').length ? null : l;
					window.__weftListVisible = getComputedStyle(v).visibility; mo.disconnect(); } });
			mo.observe(document, { childList: true, subtree: true }); })()`})
		return r.Identifier, err
	}))
	defer e.run(t, "remove the probe", chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.RemoveScriptToEvaluateOnNewDocument, page.RemoveScriptToEvaluateOnNewDocumentParams{Identifier: probe})
		return chromedp.Void{}, err
	}))

	// Scripts on: the module takes the server's list over (the same
	// elements, not drawn again) from the answer in the page (no API
	// call), and the list works.
	e.run(t, "the meshes page", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"),
		chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/plain"]`)), poll(`performance.getEntriesByName('weft-view').length > 0`))
	if got := eval[string](t, e, viewHTML); got != drawn {
		t.Fatalf("the module drew another view:\n%s\nthe server's:\n%s", got, drawn)
	}
	if !eval[bool](t, e, `window.__weftServerList === document.getElementById('list-mesh')`) {
		t.Fatal("the module drew the list again instead of taking the server's over")
	}
	// The page's own policy allows its inline stylesheet and scripts,
	// and nothing else was refused.
	if v := eval[[]string](t, e, `window.__weftCSP`); len(v) != 0 {
		t.Fatalf("the content policy refused %v", v)
	}
	if bg := eval[string](t, e, `getComputedStyle(document.querySelector('header.top')).backgroundColor`); bg != "rgb(13, 27, 42)" {
		t.Fatalf("the header's background is %q: the inline stylesheet was not applied", bg)
	}
	if n := eval[int](t, e, `performance.getEntriesByType('resource').filter((r) => r.name.includes('/v20190125/')).length`); n != 0 {
		t.Fatalf("the page read the API %d times for the list it holds", n)
	}
	e.run(t, "search the list", chromedp.SendKeys(css(`#view input[type="search"]`), "pla"),
		poll(`document.querySelectorAll('#list-mesh tbody tr').length === 1 && document.querySelector('#list-mesh tbody a').textContent === 'plain'`))
	// The list's answer was used once: back on the list, it is read
	// from the API again (a mesh created meanwhile shows).
	e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": "later"})
	e.run(t, "away and back", chromedp.Navigate(e.base+"/console/#/proxies"), chromedp.WaitVisible(css("#proxies")),
		chromedp.Navigate(e.base+"/console/#/meshes"), chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/later"]`)))

	// A link to another view: the server's list is hidden until that
	// view is drawn.
	e.run(t, "open the proxies page directly", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/#/proxies"),
		chromedp.WaitVisible(css("#proxies")))
	if v := eval[string](t, e, `window.__weftListVisible`); v != "hidden" {
		t.Fatalf("the server's list was %q on a link to the proxies page, want hidden", v)
	}
	if eval[bool](t, e, `document.documentElement.classList.contains('weft-deep') || !!document.getElementById('list-mesh')`) {
		t.Fatal("the proxies page is hidden or still holds the list")
	}

}
