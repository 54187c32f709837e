package console

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/tracing"
	"github.com/chromedp/chromedp"
)

// traceEvent is one event of Chromium's trace (the Trace Event Format).
type traceEvent struct {
	Name string          `json:"name"`
	Cat  string          `json:"cat"`
	Ph   string          `json:"ph"`
	Ts   float64         `json:"ts"`  // µs
	Dur  float64         `json:"dur"` // µs, for "X"
	Pid  int             `json:"pid"`
	Tid  int             `json:"tid"`
	Args json.RawMessage `json:"args"`
}

// TestConsoleFirstPaintTrace records a Chromium trace of a fresh browser's
// first load of the console, in the order TestConsoleFirstPage loads pages
// (/healthz, a trivial HTML page, then the console), and logs where the
// console's load spent its time: per thread, the trace events with the
// most time in them (nested events are each counted), and every font
// event. WEFT_FIRST_PAINT_TRACE=file keeps the trace (JSON, for
// chrome://tracing or Perfetto). It asserts only that the list was
// painted and that the trace holds the renderer's paint
// (docs/bench/console.md).
func TestConsoleFirstPaintTrace(t *testing.T) {
	e := newEnv(t)
	for _, m := range []string{"alpha", "beta", "gamma"} {
		e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": m})
	}
	value(t, e, "add the list probe", chromedp.Action[page.ScriptIdentifier](func(ctx context.Context, tg *chromedp.Target) (page.ScriptIdentifier, error) {
		r, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: listProbe})
		return r.Identifier, err
	}))
	trivial := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "<!doctype html><html lang=\"en\"><title>t</title><p>Meshes</p></html>")
	}))
	defer trivial.Close()
	e.run(t, "baseline", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/healthz"))
	e.run(t, "trivial page", chromedp.Navigate("about:blank"), chromedp.Navigate(trivial.URL),
		chromedp.WaitReady(css("p")), poll(`performance.getEntriesByName('first-contentful-paint').length > 0`))
	e.run(t, "about:blank", chromedp.Navigate("about:blank"))

	var (
		mu     sync.Mutex
		events []traceEvent
		done   = make(chan struct{})
	)
	if err := chromedp.Listen(e.browser, func(ev any) {
		switch ev := ev.(type) {
		case *tracing.EventDataCollected:
			mu.Lock()
			for _, v := range ev.Value {
				var te traceEvent
				if json.Unmarshal(v, &te) == nil {
					events = append(events, te)
				}
			}
			mu.Unlock()
		case *tracing.EventTracingComplete:
			close(done)
		}
	}); err != nil {
		t.Fatal(err)
	}
	cats := []string{"devtools.timeline", "disabled-by-default-devtools.timeline", "blink", "fonts", "cc", "viz", "gpu", "toplevel", "loading", "v8"}
	e.run(t, "start tracing", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, tracing.Start, tracing.StartParams{TransferMode: tracing.StartTransferModeReportEvents,
			TraceConfig: &tracing.TraceConfig{RecordMode: tracing.TraceConfigRecordModeRecordAsMuchAsPossible, IncludedCategories: cats}})
		return err
	}))
	e.run(t, "the meshes page", chromedp.Navigate(e.base+"/console/"),
		chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/gamma"]`)), poll(`window.__weftList.paint !== undefined && performance.getEntriesByName('weft-view').length > 0`))
	f := eval[map[string]float64](t, e, firstPageTimes)
	e.run(t, "end tracing", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, tracing.End, cdp.Empty{})
		return err
	}))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the trace did not complete within 30 s")
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("fresh browser's first load of the console, ms from the request start: list painted %.1f, in the document %.1f, its frame started %.1f; %d trace events",
		f["listPaint"], f["listDOM"], f["listFrame"], len(events))
	if p := os.Getenv("WEFT_FIRST_PAINT_TRACE"); p != "" {
		b, _ := json.Marshal(map[string]any{"traceEvents": events})
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logTrace(t, events)
}

// logTrace logs, per thread, the events of the trace with the most time
// in them, and every font event.
func logTrace(t *testing.T, events []traceEvent) {
	t.Helper()
	type key struct{ pid, tid int }
	threads := map[key]string{}
	procs := map[int]string{}
	for _, ev := range events {
		if ev.Ph != "M" {
			continue
		}
		var a struct {
			Name string `json:"name"`
		}
		json.Unmarshal(ev.Args, &a)
		switch ev.Name {
		case "thread_name":
			threads[key{ev.Pid, ev.Tid}] = a.Name
		case "process_name":
			procs[ev.Pid] = a.Name
		}
	}
	type agg struct {
		thread, name string
		total, max   float64
		n            int
	}
	sums := map[string]*agg{}
	open := map[key][]traceEvent{} // B events waiting for their E
	add := func(ev traceEvent, dur float64) {
		k := key{ev.Pid, ev.Tid}
		th := procs[ev.Pid] + "/" + threads[k]
		id := th + "\x00" + ev.Name
		a := sums[id]
		if a == nil {
			a = &agg{thread: th, name: ev.Name}
			sums[id] = a
		}
		a.total += dur
		a.max = max(a.max, dur)
		a.n++
	}
	var paints, fonts int
	for _, ev := range events {
		k := key{ev.Pid, ev.Tid}
		switch ev.Ph {
		case "X":
			add(ev, ev.Dur)
		case "B":
			open[k] = append(open[k], ev)
		case "E":
			if s := open[k]; len(s) > 0 {
				b := s[len(s)-1]
				open[k] = s[:len(s)-1]
				add(b, ev.Ts-b.Ts)
			}
		}
		if ev.Name == "Paint" || ev.Name == "PrePaint" {
			paints++
		}
		if strings.Contains(ev.Cat, "fonts") || strings.Contains(strings.ToLower(ev.Name), "font") {
			fonts++
		}
	}
	all := make([]*agg, 0, len(sums))
	for _, a := range sums {
		all = append(all, a)
	}
	slices.SortFunc(all, func(a, b *agg) int { return cmp.Compare(b.total, a.total) })
	var b strings.Builder
	for i, a := range all {
		if i == 40 {
			break
		}
		fmt.Fprintf(&b, "\n  %8.2f ms  (%3d, max %7.2f)  %-40s %s", a.total/1000, a.n, a.max/1000, a.thread, a.name)
	}
	t.Logf("trace: the 40 events with the most time (ms in all, count, longest; nested events each counted):%s", b.String())
	b.Reset()
	for _, a := range all {
		if strings.Contains(strings.ToLower(a.name), "font") || strings.Contains(a.name, "Shap") || strings.Contains(a.name, "Glyph") {
			fmt.Fprintf(&b, "\n  %8.2f ms  (%3d, max %7.2f)  %-40s %s", a.total/1000, a.n, a.max/1000, a.thread, a.name)
		}
	}
	t.Logf("trace: font, shaping and glyph events (%d):%s", fonts, b.String())
	// The first load's main costs, each event counted once (an event
	// inside another of the same name on its thread is left out).
	b.Reset()
	for _, name := range []string{"FontCache::GetFontPlatformData", "WebSandboxSupportLinux::GetWebFontRenderStyleForStrike",
		"FontDataManager::onMatchFamilyStyle", "UpdateLayoutTree", "Layout", "Paint", "RasterTask", "LocalWindowProxy::Initialize"} {
		n, total := outermost(events, name)
		fmt.Fprintf(&b, "\n  %-55s %3d  %7.1f ms", name, n, total/1000)
	}
	t.Logf("trace: the first load's main costs (count, ms in all):%s", b.String())
	if paints == 0 {
		t.Fatal("the trace holds no Paint event")
	}
}

// outermost counts the complete ("X") events named name, and their time
// in µs, leaving out those inside another of the same name on their
// thread.
func outermost(events []traceEvent, name string) (n int, total float64) {
	var evs []traceEvent
	for _, ev := range events {
		if ev.Ph == "X" && ev.Name == name {
			evs = append(evs, ev)
		}
	}
	slices.SortFunc(evs, func(a, b traceEvent) int { return cmp.Compare(a.Ts, b.Ts) })
	type key struct{ pid, tid int }
	end := map[key]float64{}
	for _, ev := range evs {
		k := key{ev.Pid, ev.Tid}
		if ev.Ts < end[k] {
			continue
		}
		end[k] = ev.Ts + ev.Dur
		n++
		total += ev.Dur
	}
	return n, total
}
