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
	// The first page's code is inline; the other views are hashed files.
	if resp.StatusCode != 200 || !strings.Contains(body, `<script type="module"`) || !strings.Contains(body, `/console/b/mesh-`) {
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
