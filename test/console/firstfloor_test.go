package console

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// TestConsoleFirstPageFloor breaks the first page's paint down against
// pages that do less, in the same browser, interleaved: a trivial HTML
// page (one line of text); the console's page as the server drew it with
// its scripts taken out (the list and its stylesheet, nothing to run);
// the same page with its scripts, from the same listener; and the console
// itself. Each is timed from the request start to its first contentful
// paint (for the console's page, the list's paint: the list is in its
// first paint). It logs the medians and asserts only that each page was
// painted (docs/bench/console.md).
func TestConsoleFirstPageFloor(t *testing.T) {
	e := newEnv(t)
	for _, m := range []string{"alpha", "beta", "gamma"} {
		e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": m})
	}
	resp, err := http.Get(e.base + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	full, _ := io.ReadAll(resp.Body)
	csp := resp.Header.Get("Content-Security-Policy")
	resp.Body.Close()
	if !strings.Contains(string(full), `id="list-mesh"`) {
		t.Fatalf("the page holds no list:\n%s", full)
	}
	static := regexp.MustCompile(`(?s)<script.*?</script>\n?`).ReplaceAll(full, nil)
	base, _ := url.Parse(e.base)
	server := httputil.NewSingleHostReverseProxy(base) // the page's code and API, from the server
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/trivial" || r.URL.Path == "/static" || r.URL.Path == "/scripted" {
			// Only on the pages: the proxy adds the server's headers to
			// these (a module served as text/html is refused).
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
		}
		switch r.URL.Path {
		case "/trivial":
			io.WriteString(w, "<!doctype html><html lang=\"en\"><title>t</title><p>Meshes</p></html>")
		case "/static":
			w.Header().Set("Content-Security-Policy", csp)
			w.Write(static)
		case "/scripted":
			w.Header().Set("Content-Security-Policy", csp)
			w.Write(full)
		default:
			server.ServeHTTP(w, r)
		}
	}))
	defer pages.Close()
	// The same probe as TestConsoleFirstPage's, so that every page runs
	// the same injected script.
	value(t, e, "add the list probe", chromedp.Action[page.ScriptIdentifier](func(ctx context.Context, tg *chromedp.Target) (page.ScriptIdentifier, error) {
		r, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: listProbe})
		return r.Identifier, err
	}))
	// A page with its scripts loads the page's code once it is painted:
	// the next page waits for that code to have taken the view over
	// (leaving earlier aborts its import, which the browser reports as
	// an uncaught error).
	order := []struct {
		name, url string
		code      bool
	}{{"trivial page", pages.URL + "/trivial", false}, {"the page, scripts taken out", pages.URL + "/static", false},
		{"the page with its scripts", pages.URL + "/scripted", true}, {"the console", e.base + "/console/", true}}
	got := map[string][]float64{}
	for i := 0; i < 8; i++ {
		for _, p := range order {
			e.run(t, p.name, chromedp.Navigate("about:blank"), chromedp.Navigate(p.url), chromedp.WaitReady(css("title")),
				poll(`performance.getEntriesByName('first-contentful-paint').length > 0`))
			got[p.name] = append(got[p.name], eval[float64](t, e, `performance.getEntriesByName('first-contentful-paint')[0].startTime -
				performance.getEntriesByType('navigation')[0].requestStart`))
			if p.code {
				e.run(t, p.name+": its code", poll(`performance.getEntriesByName('weft-view').length > 0`))
			}
		}
	}
	for _, p := range order {
		v := got[p.name]
		t.Logf("%s: first paint, ms from the request start: median %.1f (%.1f-%.1f) of %d", p.name, median(v), minOf(v), maxOf(v), len(v))
	}
}
