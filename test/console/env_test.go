package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/weftmesh/weft/internal/labproxy"
	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/server"
	"github.com/weftmesh/weft/internal/xds/lrs"
)

// env is a weft server, the lab its proxies run in, and a browser.
type env struct {
	base    string // API URL, where the console is served
	xds     string
	lab     *netns.Lab
	next    byte // last host address used on the lab's bridge
	browser context.Context
	shots   string // where screenshots go
}

func freePort(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, "")
}

// newEnvWith starts the server with a credentials file (its YAML; none
// when "") and what opts change in its configuration.
func newEnvWith(t *testing.T, authFile string, opts ...func(*server.Config)) *env {
	t.Helper()
	needNamespace(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is needed (scripts/test.sh installs Debian's)")
	}
	ctx := t.Context()
	lab, err := netns.New(ctx, labFamily, netip.MustParsePrefix("10.79.0.0/24"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab: %v", err)
		}
	})
	br := lab.Prefix() + "br"
	for _, args := range [][]string{{"addr", "add", "10.79.0.1/24", "dev", br}, {"link", "set", br, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	// The API stays on loopback (no sign-in, as on a laptop); xDS listens
	// on the bridge for the proxies, in this test's own namespace.
	cfg := server.Config{APIAddr: freePort(t, "127.0.0.1"), XDSAddr: freePort(t, "10.79.0.1"), DataDir: t.TempDir(),
		Region: "us-east-1", AccountID: "111122223333", Insecure: true, XDSInsecure: true,
		// Proxies report their load every second (the least they accept),
		// rates over the last 5 s: a new split shows within seconds.
		LRS: lrs.Limits{Interval: time.Second, Window: 5 * time.Second}}
	if authFile != "" {
		cfg.AuthFile = filepath.Join(t.TempDir(), "auth.yaml")
		if err := os.WriteFile(cfg.AuthFile, []byte(authFile), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range opts {
		o(&cfg)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(sctx, cfg, slog.New(slog.DiscardHandler)) }() // ends with cancel in Cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	e := &env{base: "http://" + cfg.APIAddr, xds: cfg.XDSAddr, lab: lab, next: 10}
	waitFor(t, 20*time.Second, "the API", func() bool {
		resp, err := http.Get(e.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	e.shots = os.Getenv("WEFT_CONSOLE_SCREENSHOTS")
	if e.shots == "" {
		e.shots = t.TempDir() // WEFT_CONSOLE_SCREENSHOTS keeps them
	}
	bctx, stop := startBrowser(t, chromium)
	t.Cleanup(stop)
	e.browser = bctx
	return e
}

// startBrowser starts a new Chromium (a new profile: nothing cached) and
// returns its context; stop ends it. Script errors fail the test.
func startBrowser(t *testing.T, chromium string) (context.Context, func()) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 860), chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	stop := func() { bcancel(); acancel() }
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		stop()
		t.Fatalf("start chromium: %v", err)
	}
	// chromedp turns on DevTools' network recording, which a user's
	// browser does not run: each request then also sends its events to
	// this process and keeps its body for inspection, which doubled the
	// browser's cost per request (measured: 20 ms to 10 ms per read on a
	// loaded machine). The tests read no network events.
	if _, err := chromedp.Run(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.Disable, cdp.Empty{})
		return err
	})); err != nil {
		stop()
		t.Fatalf("network recording off: %v", err)
	}
	// Script errors fail the test: the console must not throw.
	if err := chromedp.Listen(bctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			t.Errorf("browser: uncaught exception: %s (%s:%d)", msg, d.URL, d.LineNumber)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value), a.Description)
				}
				t.Logf("browser console.error: %s", strings.Join(parts, " "))
			}
		}
	}); err != nil {
		stop()
		t.Fatal(err)
	}
	return bctx, stop
}

// run runs browser actions with a deadline.
func (e *env) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	value(t, e, what, chromedp.Steps(actions...))
}

// runWithin runs browser actions with deadline d.
func (e *env) runWithin(t *testing.T, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	valueWithin(t, e, d, what, chromedp.Steps(actions...))
}

// value runs one browser action that returns a value, with a deadline.
func value[T any](t *testing.T, e *env, what string, a chromedp.Action[T]) T {
	t.Helper()
	return valueWithin(t, e, 30*time.Second, what, a)
}

func valueWithin[T any](t *testing.T, e *env, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.browser, d)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		shot, _ := chromedp.Run(e.browser, chromedp.CaptureScreenshot())
		p := filepath.Join(e.shots, "failed-"+strings.ReplaceAll(t.Name(), "/", "_")+".png")
		os.WriteFile(p, shot, 0o644)
		t.Fatalf("%s: %v (screenshot %s)", what, err, p)
	}
	return v
}

func (e *env) screenshot(t *testing.T, name string) {
	t.Helper()
	b := value(t, e, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(e.shots, name+".png"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// api calls the API as the CLI would on loopback (no credentials file).
func (e *env) api(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.base+path, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	if out == nil {
		out = map[string]any{}
	}
	out["__type"] = resp.Header.Get("x-amzn-ErrorType")
	return resp.StatusCode, out
}

func (e *env) mustAPI(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	code, out := e.api(t, method, path, body)
	if code != 200 {
		t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

// cloudMap calls a Cloud Map operation as the CLI would on loopback.
func (e *env) cloudMap(t *testing.T, op string, body any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", e.base+"/", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "Route53AutoNaming_v20170314."+op)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d %v %v", op, resp.StatusCode, out, err)
	}
	return out
}

// startProxy runs weft proxy for nodeID in a new lab host until the test
// ends.
func (e *env) startProxy(t *testing.T, name, nodeID string) *netns.Host {
	t.Helper()
	h := e.addHost(t, name, nil)
	e.startProxyOn(t, h, nodeID)
	return h
}

// addHost adds a host to the lab. hosts, when given, is its /etc/hosts
// (ip netns exec mounts /etc/netns/<name>/hosts there): the names the
// proxy in it resolves, as a VPC's private DNS would answer them.
func (e *env) addHost(t *testing.T, name string, hosts map[string]netip.Addr) *netns.Host {
	t.Helper()
	e.next++
	h, err := e.lab.AddHost(t.Context(), name, netip.AddrFrom4([4]byte{10, 79, 0, e.next}), netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) > 0 {
		var b strings.Builder
		b.WriteString("127.0.0.1 localhost\n")
		for n, a := range hosts {
			fmt.Fprintf(&b, "%s %s\n", a, n)
		}
		dir := filepath.Join(netns.EtcDir, h.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil { // removed with the host by lab.Close
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// startProxyOn runs weft proxy for nodeID in host h until the test ends.
func (e *env) startProxyOn(t *testing.T, h *netns.Host, nodeID string) {
	t.Helper()
	labproxy.Start(t, h, nodeID, e.xds)
}

// serveApp runs a node's application in host h: an HTTP server on addr
// answering every request with name, until the test ends.
func serveApp(t *testing.T, h *netns.Host, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // ends with Close in Cleanup
	t.Cleanup(func() { srv.Close() })
}

// sendLoad sends GET url at about rate requests per second until the test
// ends, counting the answers by body (what each application answered)
// and the failures.
func sendLoad(t *testing.T, url string, rate int) *loadCounts {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &loadCounts{by: map[string]int{}}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	done := make(chan struct{})
	go func() { // ends with cancel in Cleanup
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(rate)) // the load's pace, not a wait
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.add("", true)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			c.add(string(b), resp.StatusCode != 200)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.CloseIdleConnections()
	})
	return c
}

// loadCounts are sendLoad's answers so far.
type loadCounts struct {
	mu     sync.Mutex
	by     map[string]int
	failed int
}

func (c *loadCounts) add(body string, failed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if failed {
		c.failed++
		return
	}
	c.by[body]++
}

func (c *loadCounts) snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.by), c.failed
}

// proxyStatus is the part of /v1/proxies this test reads.
type proxyStatus struct {
	Revision int64
	Proxies  []struct {
		NodeID, Mesh, Kind, Name string
		Replicas                 int
		Types                    map[string]struct {
			Version, Acked string
			AckedReplicas  int
		}
		LastNack *struct{ Message string }
		Error    string
	}
}

func (e *env) proxies(t *testing.T) proxyStatus {
	t.Helper()
	resp, err := http.Get(e.base + "/v1/proxies")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st proxyStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// allAcked reports whether n proxies of mesh are connected and have ACKed
// every version served to them.
func (st proxyStatus) allAcked(mesh string, n int) bool {
	got := 0
	for _, p := range st.Proxies {
		if p.Mesh != mesh {
			continue
		}
		if len(p.Types) == 0 {
			return false
		}
		for _, ty := range p.Types {
			if ty.Version == "" || ty.Acked != ty.Version || ty.AckedReplicas != p.Replicas {
				return false
			}
		}
		got++
	}
	return got == n
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline, not a wait for time to pass
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
