package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/console"
)

// consoleClient is a browser's view of the API: a cookie jar, and the
// CSRF token it read from the session endpoint.
type consoleClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newConsoleClient(t *testing.T, base string) *consoleClient {
	jar, _ := cookiejar.New(nil)
	return &consoleClient{t: t, base: base, c: &http.Client{Jar: jar}}
}

func (cc *consoleClient) do(method, path, body string, hdr map[string]string) (*http.Response, string) {
	cc.t.Helper()
	req, err := http.NewRequest(method, cc.base+path, strings.NewReader(body))
	if err != nil {
		cc.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := cc.c.Do(req)
	if err != nil {
		cc.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (cc *consoleClient) signIn(id, secret string) *http.Response {
	cc.t.Helper()
	resp, body := cc.do("POST", "/console/api/session", `{"accessKeyId":"`+id+`","secretAccessKey":"`+secret+`"}`, nil)
	if resp.StatusCode == 200 {
		var in struct{ CSRF string }
		json.Unmarshal([]byte(body), &in)
		cc.csrf = in.CSRF
	}
	return resp
}

func wantStatus(t *testing.T, resp *http.Response, body string, status int, errType string) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("x-amzn-ErrorType") != errType {
		t.Fatalf("%s %s: got %d %q %s, want %d %q", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), body, status, errType)
	}
}

// TestConsoleSession: with a credentials file the console's assets are
// open, its API calls act as the signed-in key (its permissions exactly),
// only with the session's CSRF token, until sign-out.
func TestConsoleSession(t *testing.T) {
	e := newAuthEnv(t, authFile)
	anon := newConsoleClient(t, e.url)
	resp, body := anon.do("GET", "/console/", "", nil)
	// The first page's code is a hashed file, loaded after the first
	// frame.
	if resp.StatusCode != 200 || !strings.Contains(body, `import('/console/b/first-`) {
		t.Fatalf("GET /console/: %d %s", resp.StatusCode, body)
	}
	resp, body = anon.do("GET", "/console/api/session", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"auth":true`) || strings.Contains(body, `"signedIn":true`) {
		t.Fatalf("GET session before sign-in: %d %s", resp.StatusCode, body)
	}
	resp, body = anon.do("GET", "/v20190125/meshes", "", nil)
	wantStatus(t, resp, body, 403, "MissingAuthenticationTokenException")

	t.Run("bad secret", func(t *testing.T) {
		cc := newConsoleClient(t, e.url)
		resp := cc.signIn("AKIDADMIN", "wrong")
		if resp.StatusCode != 403 || len(resp.Cookies()) != 0 {
			t.Fatalf("sign-in with a wrong secret: %d, cookies %v", resp.StatusCode, resp.Cookies())
		}
		resp = cc.signIn("AKIDNOBODY", "x")
		if resp.StatusCode != 403 || resp.Header.Get("x-amzn-ErrorType") != "UnrecognizedClientException" {
			t.Fatalf("sign-in with an unknown key: %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"))
		}
	})

	t.Run("form post refused", func(t *testing.T) {
		cc := newConsoleClient(t, e.url)
		resp, _ := cc.do("POST", "/console/api/session", "accessKeyId=AKIDADMIN&secretAccessKey=admin-secret", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("form sign-in: %d", resp.StatusCode)
		}
	})

	t.Run("acts as the key", func(t *testing.T) {
		cc := newConsoleClient(t, e.url)
		resp := cc.signIn("AKIDMESHA", "mesh-a-secret")
		if resp.StatusCode != 200 {
			t.Fatalf("sign-in: %d", resp.StatusCode)
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == console.CookieName {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.MaxAge <= 0 {
			t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, an expiry", ck)
		}
		csrf := map[string]string{console.CSRFHeader: cc.csrf}
		// Without the CSRF token the cookie is worth nothing.
		resp, body := cc.do("PUT", "/v20190125/meshes", `{"meshName":"a"}`, nil)
		wantStatus(t, resp, body, 403, "AccessDeniedException")
		resp, body = cc.do("PUT", "/v20190125/meshes", `{"meshName":"a"}`, map[string]string{console.CSRFHeader: "forged"})
		wantStatus(t, resp, body, 403, "AccessDeniedException")
		// With it, the key's permissions: mesh a, in its account.
		resp, body = cc.do("PUT", "/v20190125/meshes", `{"meshName":"a"}`, csrf)
		if resp.StatusCode != 200 || !strings.Contains(body, `"meshOwner":"444455556666"`) {
			t.Fatalf("create mesh a as AKIDMESHA: %d %s", resp.StatusCode, body)
		}
		resp, body = cc.do("PUT", "/v20190125/meshes", `{"meshName":"b"}`, csrf)
		wantStatus(t, resp, body, 403, "AccessDeniedException")
		if !strings.Contains(body, "mesh/b") {
			t.Fatalf("denial names the resource: %s", body)
		}
		resp, body = cc.do("POST", "/", `{}`, map[string]string{console.CSRFHeader: cc.csrf, "X-Amz-Target": "Route53AutoNaming_v20170314.ListNamespaces", "Content-Type": "application/x-amz-json-1.1"})
		wantStatus(t, resp, body, 403, "AccessDeniedException")
		// The event stream is authorized as weft:GetEvents, which this key lacks.
		resp, body = cc.do("GET", "/v1/events?mesh=a", "", csrf)
		wantStatus(t, resp, body, 403, "AccessDeniedException")
		// Sign-out needs the token too, then ends the session.
		resp, _ = cc.do("DELETE", "/console/api/session", "", nil)
		if resp.StatusCode != 403 {
			t.Fatalf("sign-out without CSRF: %d", resp.StatusCode)
		}
		resp, _ = cc.do("DELETE", "/console/api/session", "", csrf)
		if resp.StatusCode != 204 {
			t.Fatalf("sign-out: %d", resp.StatusCode)
		}
		cc.c.Jar.SetCookies(resp.Request.URL, []*http.Cookie{ck}) // a copy of the old cookie
		resp, body = cc.do("GET", "/v20190125/meshes", "", csrf)
		wantStatus(t, resp, body, 403, "UnrecognizedClientException")
	})

	t.Run("events", func(t *testing.T) {
		cc := newConsoleClient(t, e.url)
		if resp := cc.signIn("AKIDADMIN", "admin-secret"); resp.StatusCode != 200 {
			t.Fatalf("sign-in: %d", resp.StatusCode)
		}
		csrf := map[string]string{console.CSRFHeader: cc.csrf}
		resp, body := cc.do("GET", "/v1/events", "", csrf)
		wantStatus(t, resp, body, 400, "BadRequestException")
		resp, body = cc.do("GET", "/v1/events?mesh=nope", "", csrf)
		wantStatus(t, resp, body, 404, "NotFoundException")
		if resp, body := cc.do("PUT", "/v20190125/meshes", `{"meshName":"live"}`, csrf); resp.StatusCode != 200 {
			t.Fatalf("create mesh: %d %s", resp.StatusCode, body)
		}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", e.url+"/v1/events?mesh=live", nil)
		req.Header.Set(console.CSRFHeader, cc.csrf)
		stream, err := cc.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Body.Close()
		if ct := stream.Header.Get("Content-Type"); stream.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("events: %d %s", stream.StatusCode, ct)
		}
		lines := make(chan string, 16)
		go func() { // ends when the stream's body is closed (deferred above)
			defer close(lines)
			sc := bufio.NewScanner(stream.Body)
			for sc.Scan() {
				if l := sc.Text(); strings.HasPrefix(l, "data: ") {
					lines <- l
				}
			}
		}()
		next := func() string {
			select {
			case l := <-lines:
				return l
			case <-time.After(10 * time.Second):
				t.Fatal("no event within 10 s")
			}
			return ""
		}
		if l := next(); !strings.Contains(l, `"mesh":"live"`) || !strings.Contains(l, `"revision"`) {
			t.Fatalf("hello: %s", l)
		}
		resp, body = cc.do("PUT", "/v20190125/meshes/live/virtualNodes", `{"virtualNodeName":"n1","spec":{}}`, csrf)
		if resp.StatusCode != 200 {
			t.Fatalf("create node: %d %s", resp.StatusCode, body)
		}
		var ev console.Event
		json.Unmarshal([]byte(strings.TrimPrefix(next(), "data: ")), &ev)
		if ev.Kind != "virtualNode" || ev.Name != "n1" || ev.Op != "put" || ev.Mesh != "live" || ev.Revision == 0 {
			t.Fatalf("change event: %+v", ev)
		}
		cc.do("DELETE", "/v20190125/meshes/live/virtualNodes/n1", "", csrf)
		json.Unmarshal([]byte(strings.TrimPrefix(next(), "data: ")), &ev)
		if ev.Name != "n1" || ev.Op != "delete" {
			t.Fatalf("delete event: %+v", ev)
		}
	})
}

// TestConsoleAssetsSize: the console's assets stay under 1 MB gzipped.
func TestConsoleAssetsSize(t *testing.T) {
	raw, gz := console.New(nil).Sizes()
	t.Logf("console assets: %d bytes, %d gzipped", raw, gz)
	if gz >= 1<<20 || gz == 0 {
		t.Fatalf("console assets are %d bytes gzipped; the budget is 1 MiB", gz)
	}
}

// TestShutdownEndsEventStreams: a console's open event stream does not
// hold up a graceful shutdown (it would wait for it, then fail).
func TestShutdownEndsEventStreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := Config{APIAddr: addr, DataDir: t.TempDir(), Region: "us-east-1", AccountID: "111122223333"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }() // ends with cancel below
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	cc := newConsoleClient(t, base)
	if resp, body := cc.do("PUT", "/v20190125/meshes", `{"meshName":"m"}`, nil); resp.StatusCode != 200 {
		t.Fatalf("create mesh: %d %s", resp.StatusCode, body)
	}
	stream, err := http.Get(base + "/v1/events?mesh=m")
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("events: %v %v", stream, err)
	}
	defer stream.Body.Close()
	r := bufio.NewReader(stream.Body)
	if l, _ := r.ReadString('\n'); l != "event: hello\n" {
		t.Fatalf("first line %q", l)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run with an open event stream: %v", err)
	}
	if _, err := io.ReadAll(r); err != nil {
		t.Logf("stream after shutdown: %v", err)
	}
}

// TestConsoleFirstView: /console/ carries its first view drawn by the
// server, read through the API as the caller: without a session the
// sign-in form and no mesh, with one the meshes list exactly as the
// session's key reads it (its account, its permissions), every name
// escaped; the page is never cached.
func TestConsoleFirstView(t *testing.T) {
	e := newAuthEnv(t, authFile)
	admin := newConsoleClient(t, e.url)
	if resp := admin.signIn("AKIDADMIN", "admin-secret"); resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	const odd = `x<y&z"q`
	if resp, body := admin.do("PUT", "/v20190125/meshes", `{"meshName":"x<y&z\"q"}`, map[string]string{console.CSRFHeader: admin.csrf}); resp.StatusCode != 200 {
		t.Fatalf("create mesh: %d %s", resp.StatusCode, body)
	}
	// Another account's key, and its mesh.
	other := newConsoleClient(t, e.url)
	if resp := other.signIn("123456789012", "digits-secret"); resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	if resp, body := other.do("PUT", "/v20190125/meshes", `{"meshName":"digits-mesh"}`, map[string]string{console.CSRFHeader: other.csrf}); resp.StatusCode != 200 {
		t.Fatalf("create mesh digits-mesh: %d %s", resp.StatusCode, body)
	}
	page := func(t *testing.T, cc *consoleClient) string {
		t.Helper()
		resp, body := cc.do("GET", "/console/", "", nil) // a navigation: the cookie, no CSRF header
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || !strings.Contains(resp.Header.Get("Vary"), "Cookie") {
			t.Fatalf("GET /console/: %d %v", resp.StatusCode, resp.Header)
		}
		return body
	}
	view := func(page string) string {
		i, j := strings.Index(page, `<main id="view" tabindex="-1">`), strings.Index(page, "</main>")
		if i < 0 || j < i {
			t.Fatalf("no view in the page:\n%s", page)
		}
		return page[i:j]
	}
	leaks := []string{"x&lt;y", `x\u003cy`, ":mesh/", `id="list-mesh"`}

	t.Run("signed out: the sign-in form, no mesh", func(t *testing.T) {
		for _, cc := range []*consoleClient{newConsoleClient(t, e.url), func() *consoleClient {
			cc := newConsoleClient(t, e.url) // a cookie that names no session
			u, _ := url.Parse(e.url)
			cc.c.Jar.SetCookies(u, []*http.Cookie{{Name: console.CookieName, Value: "forged"}})
			return cc
		}()} {
			body := page(t, cc)
			if v := view(body); !strings.Contains(v, `<form class="card signin" method="post" action="/console/api/session">`) || !strings.Contains(v, `id="sign-in"`) {
				t.Fatalf("signed-out view:\n%s", v)
			}
			for _, s := range leaks {
				if strings.Contains(body, s) {
					t.Fatalf("the signed-out page holds %q:\n%s", s, view(body))
				}
			}
			if !strings.Contains(body, `"session":{"auth":true,"signedIn":false}`) {
				t.Fatalf("the page does not hand over the signed-out session:\n%s", body)
			}
		}
	})

	t.Run("signed in: the list as the key reads it", func(t *testing.T) {
		for _, c := range []struct {
			cc         *consoleClient
			want, not  []string
			errorTyped string
		}{
			{admin, []string{`<a href="#/mesh/x%3Cy%26z%22q">x&lt;y&amp;z&#34;q</a>`, "1 shown of 1 loaded", `<span title="arn:aws:iam::111122223333:user/admin">AKIDADMIN</span>`}, []string{odd, "digits-mesh"}, ""},
			{other, []string{`<a href="#/mesh/digits-mesh">digits-mesh</a>`, "1 shown of 1 loaded"}, []string{"x&lt;y", `x\u003cy`}, ""},
		} {
			body := page(t, c.cc)
			for _, s := range c.want {
				if !strings.Contains(body, s) {
					t.Fatalf("the page lacks %q:\n%s", s, view(body))
				}
			}
			for _, s := range c.not {
				if strings.Contains(body, s) {
					t.Fatalf("the page holds %q:\n%s", s, view(body))
				}
			}
			// The same answer as the key's own call, handed to the module.
			resp, list := c.cc.do("GET", "/v20190125/meshes?limit=50", "", map[string]string{console.CSRFHeader: c.cc.csrf})
			if resp.StatusCode != 200 {
				t.Fatalf("list: %d %s", resp.StatusCode, list)
			}
			var block struct {
				Session struct{ CSRF string }
				List    struct {
					URL, Body string
					Status    int
				}
			}
			i := strings.Index(body, `<script type="application/json" id="weft-first">`)
			if i < 0 {
				t.Fatalf("no data block:\n%s", body)
			}
			raw := body[i+len(`<script type="application/json" id="weft-first">`):]
			raw = raw[:strings.Index(raw, "</script>")]
			if err := json.Unmarshal([]byte(raw), &block); err != nil {
				t.Fatal(err)
			}
			strip := func(s string) string {
				return regexp.MustCompile(`"lastUpdatedAt":[0-9.]+|"createdAt":[0-9.]+`).ReplaceAllString(s, "")
			}
			if block.List.Status != 200 || block.List.URL != "/v20190125/meshes?limit=50" || strip(block.List.Body) != strip(strings.TrimSpace(list)) || block.Session.CSRF != c.cc.csrf {
				t.Fatalf("data block %+v, want the list %s and the session's token", block, list)
			}
		}
	})

	t.Run("a key without ListMeshes sees the API's refusal", func(t *testing.T) {
		cc := newConsoleClient(t, e.url)
		if resp := cc.signIn("AKIDMESHA", "mesh-a-secret"); resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
		resp, list := cc.do("GET", "/v20190125/meshes?limit=50", "", map[string]string{console.CSRFHeader: cc.csrf})
		wantStatus(t, resp, list, 403, "AccessDeniedException")
		body := page(t, cc)
		want := `<h1>Error</h1><div class="api-error" role="alert" data-error-type="AccessDeniedException">AccessDeniedException: User: arn:aws:iam::444455556666:user/AKIDMESHA is not authorized to perform: appmesh:ListMeshes on resource: *</div>`
		if v := view(body); v != `<main id="view" tabindex="-1">`+want {
			t.Fatalf("view %s, want %s", v, want)
		}
		for _, s := range leaks {
			if strings.Contains(body, s) {
				t.Fatalf("the page holds %q:\n%s", s, view(body))
			}
		}
	})
}
