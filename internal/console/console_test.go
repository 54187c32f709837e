package console

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/auth"
	"github.com/weftmesh/weft/internal/console/consoletest"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

type staticKeys struct{ k *auth.Keys }

func (s staticKeys) Keys() *auth.Keys { return s.k }

func keys(t *testing.T, yaml string) staticKeys {
	t.Helper()
	k, err := auth.ParseKeys([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return staticKeys{k}
}

const oneKey = `
keys:
  - id: AKID1
    secret: secret-one
    account: "111122223333"
    allow: [{actions: ["*"], resources: ["*"]}]
`

// clock is a settable clock for session expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func sessionRequest(id, csrf string) *http.Request {
	r := httptest.NewRequest("GET", "/v20190125/meshes", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: id})
	if csrf != "" {
		r.Header.Set(CSRFHeader, csrf)
	}
	return r
}

func TestSessionExpiryAndLimits(t *testing.T) {
	c := &clock{now: time.Unix(1_800_000_000, 0)}
	s := NewSessions(keys(t, oneKey), SessionLimits{TTL: time.Hour, MaxSessions: 3, MaxPerKey: 2}, c.Now)
	id, se, err := s.signIn("AKID1", "secret-one")
	if err != nil {
		t.Fatal(err)
	}
	if key, err, ok := s.Authenticate(sessionRequest(id, se.csrf)); !ok || err != nil || key.ID != "AKID1" {
		t.Fatalf("fresh session: %v %v %v", key, err, ok)
	}
	if _, _, ok := s.Authenticate(httptest.NewRequest("GET", "/", nil)); ok {
		t.Fatal("a request without the cookie counted as a session")
	}
	c.add(time.Hour)
	_, err2, ok := s.Authenticate(sessionRequest(id, se.csrf))
	if !ok || err2 == nil || err2.(*auth.Error).Code != "ExpiredTokenException" {
		t.Fatalf("expired session: %v %v", err2, ok)
	}
	// Per key: the third sign-in ends the oldest.
	a, _, _ := s.signIn("AKID1", "secret-one")
	c.add(time.Second)
	b, _, _ := s.signIn("AKID1", "secret-one")
	c.add(time.Second)
	if _, _, err := s.signIn("AKID1", "secret-one"); err != nil {
		t.Fatal(err)
	}
	if se, _, _, _ := s.lookup(sessionRequest(a, "")); se != nil {
		t.Fatal("the oldest session of the key survived a sign-in beyond the per-key cap")
	}
	if se, _, _, _ := s.lookup(sessionRequest(b, "")); se == nil {
		t.Fatal("a newer session was ended")
	}
	// A key removed from the credentials file ends its sessions.
	s.keys = keys(t, `keys: [{id: AKID2, secret: secret-two, account: "111122223333"}]`)
	if _, err, _ := s.Authenticate(sessionRequest(b, "x")); err == nil || err.(*auth.Error).Code != auth.CodeUnrecognizedClient {
		t.Fatalf("session of a removed key: %v", err)
	}
}

func TestEventsBounded(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Update(t.Context(), func(tx store.Tx) error { return tx.Put(appmesh.MeshKey("111122223333", "m"), []byte(`{}`)) })
	ev := NewEvents(EventsConfig{Store: st, Account: func(*http.Request) string { return "111122223333" }, MaxSubscribers: 1})
	srv := httptest.NewServer(ev)
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events?mesh=m", nil)
	first, err := http.DefaultClient.Do(req)
	if err != nil || first.StatusCode != 200 {
		t.Fatalf("first stream: %v %v", first, err)
	}
	defer first.Body.Close()
	buf := make([]byte, 512)
	n, _ := first.Body.Read(buf) // the hello event: the stream is counted
	if !strings.Contains(string(buf[:n]), "event: hello") {
		t.Fatalf("first event: %q", buf[:n])
	}
	second, err := http.Get(srv.URL + "/v1/events?mesh=m")
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != 503 || second.Header.Get("x-amzn-ErrorType") != "ServiceUnavailableException" {
		t.Fatalf("second stream beyond the cap: %d %s", second.StatusCode, second.Header.Get("x-amzn-ErrorType"))
	}
}

// TestEventsMaxStreamAge: a stream ends at its maximum age, saying so, so
// that the client connects again and its credentials are checked again.
func TestEventsMaxStreamAge(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Update(t.Context(), func(tx store.Tx) error { return tx.Put(appmesh.MeshKey("111122223333", "m"), []byte(`{}`)) })
	ev := NewEvents(EventsConfig{Store: st, Account: func(*http.Request) string { return "111122223333" }, MaxStreamAge: 100 * time.Millisecond})
	srv := httptest.NewServer(ev)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events?mesh=m", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("stream: %v %v", res, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body) // ends when the server ends the stream
	if err != nil {
		t.Fatalf("the stream did not end at its maximum age: %v (read %q)", err, body)
	}
	if !strings.HasPrefix(string(body), "event: hello\n") || !strings.Contains(string(body), "event: reconnect\n") {
		t.Fatalf("stream: %q", body)
	}
}

// TestEventsResume: a stream asked to start after an earlier revision
// first sends the mesh's changes since (a reconnecting console misses
// nothing and reads nothing again); a revision the store has not reached
// starts the stream now; a malformed one is refused.
func TestEventsResume(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const owner = "111122223333"
	put := func(key string) store.Revision {
		rev, err := st.Update(t.Context(), func(tx store.Tx) error { return tx.Put(key, []byte(`{}`)) })
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	node := func(mesh, name string) string {
		return appmesh.Ref{Owner: owner, Mesh: mesh, Kind: appmesh.KindVirtualNode, Name: name}.Key()
	}
	put(appmesh.MeshKey(owner, "m"))
	put(appmesh.MeshKey(owner, "other"))
	seen := put(node("m", "a"))
	put(node("other", "x"))
	last := put(node("m", "b"))
	srv := httptest.NewServer(NewEvents(EventsConfig{Store: st, Account: func(*http.Request) string { return owner }}))
	defer srv.Close()

	// open reads a stream's events up to and including the first of type
	// until.
	open := func(query, until string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events?mesh=m"+query, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", query, res, err)
		}
		defer res.Body.Close()
		var got []string
		sc := bufio.NewScanner(res.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				event = e
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				got = append(got, event+" "+d)
				if event == until {
					return got
				}
			}
		}
		t.Fatalf("%s: stream ended (%v) after %q", query, sc.Err(), got)
		return nil
	}
	got := open(fmt.Sprintf("&after=%d", seen), "change")
	want := []string{
		fmt.Sprintf(`hello {"mesh":"m","revision":%d}`, seen),
		fmt.Sprintf(`change {"revision":%d,"kind":"virtualNode","mesh":"m","name":"b","op":"put"}`, last),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("resumed after %d:\n%s\nwant\n%s", seen, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := open(fmt.Sprintf("&after=%d", last+100), "hello"); got[0] != fmt.Sprintf(`hello {"mesh":"m","revision":%d}`, last) {
		t.Fatalf("after a revision the store has not reached: %q", got)
	}
	res, err := http.Get(srv.URL + "/v1/events?mesh=m&after=-1")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 || res.Header.Get("x-amzn-ErrorType") != "BadRequestException" {
		t.Fatalf("after=-1: %d %s", res.StatusCode, res.Header.Get("x-amzn-ErrorType"))
	}
}

func TestAssetsServed(t *testing.T) {
	h := New(nil)
	// The index is drawn for each caller: gzipped, never stored.
	r := httptest.NewRequest("GET", "/console/", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Security-Policy") == "" ||
		w.Header().Get("Content-Length") != strconv.Itoa(w.Body.Len()) || w.Header().Get("Cache-Control") != "no-store" ||
		w.Header().Get("Vary") != "Cookie, Accept-Encoding" || w.Header().Get("ETag") != "" {
		t.Fatalf("/console/: %d %v", w.Code, w.Header())
	}
	for _, p := range []string{"/console/js/app.js", "/console/app.css"} {
		r := httptest.NewRequest("GET", p, nil)
		r.Header.Set("Accept-Encoding", "gzip")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Security-Policy") == "" ||
			w.Header().Get("Content-Length") != strconv.Itoa(w.Body.Len()) {
			t.Fatalf("%s: %d %v", p, w.Code, w.Header())
		}
		gzTag := w.Header().Get("ETag")
		zr, err := gzip.NewReader(w.Body)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		unzipped, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		r = httptest.NewRequest("GET", p, nil)
		r.Header.Set("Accept-Encoding", "gzip, br")
		r.Header.Set("If-None-Match", `"other", W/`+gzTag)
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNotModified || w.Header().Get("ETag") != gzTag || w.Header().Get("Vary") != "Accept-Encoding" {
			t.Fatalf("%s revalidated: %d %v", p, w.Code, w.Header())
		}
		// Not gzipped: another representation, with an ETag of its own,
		// so a cache holding the gzipped one does not take it for this one.
		r = httptest.NewRequest("GET", p, nil)
		r.Header.Set("If-None-Match", gzTag)
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Header().Get("Content-Encoding") != "" || w.Header().Get("ETag") == gzTag || !bytes.Equal(w.Body.Bytes(), unzipped) {
			t.Fatalf("%s without gzip: %d %v, body equal to the gzipped one's: %v", p, w.Code, w.Header(), bytes.Equal(w.Body.Bytes(), unzipped))
		}
		r = httptest.NewRequest("GET", p, nil)
		r.Header.Set("If-None-Match", w.Header().Get("ETag"))
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNotModified {
			t.Fatalf("%s revalidated without gzip: %d", p, w.Code)
		}
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/console/nope.js", nil))
	if w.Code != 404 {
		t.Fatalf("missing asset: %d", w.Code)
	}
}

// TestAssetsHashedURLs: the index carries the stylesheet inline, allowed
// by its hash, and loads the first page's code, which imports the later
// views, from content-hashed URLs that may be cached for a year.
func TestAssetsHashedURLs(t *testing.T) {
	h := New(nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/console/", nil))
	index := w.Body.String()
	if !strings.Contains(index, `data-auth="off" lang="en">`) {
		t.Fatalf("the index of a server without sign-in does not say so:\n%s", index)
	}
	withAuth := httptest.NewRecorder()
	New(NewSessions(keys(t, oneKey), SessionLimits{}, nil)).ServeHTTP(withAuth, httptest.NewRequest("GET", "/console/", nil))
	if strings.Contains(withAuth.Body.String(), "data-auth") {
		t.Fatalf("the index of a server with sign-in says it has none")
	}
	// Two inline scripts, each allowed by its hash: the one that hides
	// the server's meshes list on a link to another view, and the one
	// that loads the first page's code after the first frame; the data
	// block is not run. One inline stylesheet.
	scripts := regexp.MustCompile(`(?s)<script([^>]*)>(.*?)</script>`)
	styles := regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	policyOf := func(index string) (string, []string) {
		t.Helper()
		src := "script-src 'self'"
		var bodies []string
		for _, m := range scripts.FindAllStringSubmatch(index, -1) {
			if strings.Contains(m[1], "src=") {
				t.Fatalf("the index loads a script file: %s", m[0][:min(len(m[0]), 200)])
			}
			if m[1] == ` type="application/json" id="weft-first"` {
				continue
			}
			src += hash(m[2])
			bodies = append(bodies, m[2])
		}
		css := styles.FindAllStringSubmatch(index, -1)
		if len(css) != 1 {
			t.Fatalf("%d inline stylesheets", len(css))
		}
		policy := strings.Replace(basePolicy, "script-src 'self'", src, 1)
		return strings.Replace(policy, "style-src 'self'", "style-src 'self'"+hash(css[0][1]), 1), bodies
	}
	for _, page := range []*httptest.ResponseRecorder{w, withAuth} {
		index := page.Body.String()
		want, bodies := policyOf(index)
		if csp := page.Header().Get("Content-Security-Policy"); csp != want || len(bodies) != 2 || bodies[0] != deepLink ||
			!strings.Contains(index, `<script>`+bodies[1]+"</script>\n</body>") || strings.Contains(csp, "unsafe-") {
			t.Fatalf("the index's policy %q, want %q, for its scripts:\n%s", csp, want, index)
		}
		if strings.Contains(index, "<link rel=\"stylesheet\"") || strings.Contains(index, "modulepreload") || page.Header().Get("Link") != "" {
			t.Fatalf("the index links files to fetch before its first paint: Link %q\n%s", page.Header().Get("Link"), index)
		}
	}
	_, bodies := policyOf(index)
	first := regexp.MustCompile(`import\('(/console/b/first-[0-9a-f]+\.js)'\)`).FindStringSubmatch(bodies[1])
	if first == nil {
		t.Fatalf("the index does not load the first page's code: %s", bodies[1])
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", first[1], nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/javascript; charset=utf-8" || w.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Fatalf("%s: %d %v", first[1], w.Code, w.Header())
	}
	var views []string
	for _, m := range regexp.MustCompile(`import\("(/console/b/[a-z]+-[A-Z0-9]+\.js)"\)`).FindAllStringSubmatch(w.Body.String(), -1) {
		views = append(views, m[1])
	}
	if len(views) != 4 {
		t.Fatalf("the first page imports the views %v", views)
	}
	for _, c := range []struct{ url, cache string }{{views[0], "public, max-age=31536000, immutable"}, {views[3], "public, max-age=31536000, immutable"},
		{"/console/js/api.js", "no-cache"}, {"/console/app.css?v=stale", "no-cache"},
		{"/console/app.css?v=" + h.files["app.css"].version, "public, max-age=31536000, immutable"}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", c.url, nil))
		if w.Code != 200 || w.Header().Get("Cache-Control") != c.cache {
			t.Fatalf("%s: %d, Cache-Control %q, want %q", c.url, w.Code, w.Header().Get("Cache-Control"), c.cache)
		}
	}
}

// TestEventsSnapshotLimit: a mesh with more than MaxSnapshotBytes of
// resources is sent in part, in chunks, and snapshot-end says it is
// incomplete (the console then reads the mesh through the API), as is
// one asked for while MaxSnapshots are being sent; other meshes'
// resources are not in it.
func TestEventsSnapshotLimit(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const owner = "111122223333"
	if _, err := st.Update(t.Context(), func(tx store.Tx) error {
		for _, m := range []string{"m", "other"} {
			if err := tx.Put(appmesh.MeshKey(owner, m), []byte(`{}`)); err != nil {
				return err
			}
			for i := range 600 {
				ref := appmesh.Ref{Owner: owner, Mesh: m, Kind: appmesh.KindVirtualNode, Name: fmt.Sprintf("n%03d", i)}
				if err := tx.Put(ref.Key(), []byte(`{"virtualNodeName":"`+ref.Name+`"}`)); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		max, want int
		complete  bool
		busy      bool // MaxSnapshots are being sent already
	}{{0, 600, true, false}, {500 * len(`{"virtualNodeName":"n000"}`), 500, false, false}, {0, 0, false, true}} {
		ev := NewEvents(EventsConfig{Store: st, Account: func(*http.Request) string { return owner }, MaxSnapshotBytes: c.max, MaxSnapshots: 1})
		if c.busy {
			ev.snapshots <- struct{}{}
		}
		srv := httptest.NewServer(ev)
		res, err := http.Get(srv.URL + "/v1/events?mesh=m&snapshot=true")
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("stream: %v %v", res, err)
		}
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		got, chunks, end := 0, 0, ""
		for end == "" && sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			switch {
			case !ok:
			case strings.HasPrefix(data, `{"resources":`):
				chunks++
				got += strings.Count(data, `"kind":"virtualNode"`) // other's would make it 1,200
			case strings.Contains(data, `"complete"`):
				end = data
			}
		}
		res.Body.Close()
		srv.Close()
		if got != c.want || chunks != (c.want+snapshotChunk-1)/snapshotChunk || !strings.Contains(end, fmt.Sprintf(`"complete":%v`, c.complete)) {
			t.Fatalf("MaxSnapshotBytes %d, busy %v: %d resources in %d chunks, end %s; want %d, complete %v", c.max, c.busy, got, chunks, end, c.want, c.complete)
		}
	}
}

// TestEventsSnapshotGzip: a snapshot stream is gzipped for a client that
// takes gzip, decodes (with the standard library's reader) to the same
// events as the plain stream, smaller on the wire; and an event written
// after the snapshot can be read at once, while the stream stays open.
func TestEventsSnapshotGzip(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const owner = "111122223333"
	if _, err := st.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.Put(appmesh.MeshKey(owner, "m"), []byte(`{}`)); err != nil {
			return err
		}
		for i := range 600 {
			ref := appmesh.Ref{Owner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: fmt.Sprintf("n%03d", i)}
			if err := tx.Put(ref.Key(), []byte(`{"meshName":"m","virtualNodeName":"`+ref.Name+`","spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewEvents(EventsConfig{Store: st, Account: func(*http.Request) string { return owner }}))
	defer srv.Close()
	url := srv.URL + "/v1/events?mesh=m&snapshot=true"
	plainStream := consoletest.Open(t, url, "identity")
	plain := plainStream.UntilSnapshotEnd(t)
	plainRes, plainWire := plainStream.Resp, plainStream.WireBytes()
	plainRes.Body.Close()
	zs := consoletest.Open(t, url, "gzip")
	res, br := zs.Resp, zs.R
	defer res.Body.Close() // before the deferred srv.Close, which waits for the stream's handler
	zipped := zs.UntilSnapshotEnd(t)
	if plainRes.Header.Get("Content-Encoding") != "" || res.Header.Get("Content-Encoding") != "gzip" ||
		res.Header.Get("Content-Type") != "text/event-stream" || res.Header.Get("Vary") != "Accept-Encoding" {
		t.Fatalf("headers: plain %v, gzip %v", plainRes.Header, res.Header)
	}
	if zipped != plain || strings.Count(plain, `"kind":"virtualNode"`) != 600 {
		t.Fatalf("the gzipped stream decodes to other events (%d bytes, %d bytes plain)", len(zipped), len(plain))
	}
	t.Logf("snapshot of 600 nodes: %d bytes plain, %d gzipped", plainWire, zs.WireBytes())
	if zs.WireBytes()*3 > plainWire {
		t.Fatalf("gzipped %d bytes, plain %d", zs.WireBytes(), plainWire)
	}
	// A change after the snapshot reaches the reader without the stream
	// ending.
	if _, err := st.Update(t.Context(), func(tx store.Tx) error {
		return tx.Put(appmesh.Ref{Owner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "late"}.Key(), []byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after the snapshot: %v", err)
		}
		if strings.Contains(line, `"name":"late"`) {
			break
		}
	}
}
