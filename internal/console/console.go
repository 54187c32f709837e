// Package console serves weft's web console at /console/: static assets
// embedded in the binary, console sign-in sessions for servers with a
// credentials file, and the live event stream GET /v1/events that the
// console's topology follows.
//
// The console is a client of the same APIs the AWS CLI calls: the browser
// sends App Mesh REST and Cloud Map JSON requests to the API listener.
// With a credentials file, signing in with an access key creates a
// server-side session; the API's Guard then accepts a request that carries
// the session cookie and its CSRF token as if it were signed by that key
// (Sessions.Authenticate), so the console has exactly the key's
// permissions.
//
//	browser ──GET /console/…──────────▶ Handler (assets, /console/api/session)
//	        ──/v20190125/…, POST / ───▶ api.Guard (cookie + X-Weft-Csrf → key) ─▶ APIs
//	        ──GET /v1/events (SSE) ──▶ Events (store.Watch of one mesh)
package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed assets
var assets embed.FS

// firstView are the modules the first page (the meshes list) runs: when
// the bundle cannot be built, the index preloads them; the others are
// loaded when a view needs them.
var firstView = []string{"js/app.js", "js/api.js", "js/dom.js", "js/lists.js"}

// assetsMarker is the comment of assets/index.html that the server
// replaces with the links to the other assets.
const assetsMarker = "<!-- weft:assets"

// asset is one embedded file, gzipped once at start. Its two
// representations, as is and gzipped, have ETags of their own.
type asset struct {
	body, gz     []byte
	ctype        string
	etag, gzEtag string
	version      string // ?v= of its content-hashed URL
}

func newAsset(name string, b []byte) *asset {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	sum := sha256.Sum256(b)
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	v := hex.EncodeToString(sum[:8])
	return &asset{body: b, gz: gz.Bytes(), ctype: ct, etag: `"` + v + `"`, gzEtag: `"` + v + `-gz"`, version: v}
}

// Handler serves everything under /console/: the assets, and the session
// endpoints under /console/api/.
type Handler struct {
	files    map[string]*asset // by path under assets/, "index.html" ...
	indexCSP string            // the index's policy: the base one and its inline scripts' hashes
	// indexLink is the index's Link header: the stylesheet (and, without
	// the bundle, the first page's modules), which the browser starts
	// fetching when the response's headers arrive, before it parses the
	// index.
	indexLink string
	sessions  *Sessions // nil: no credentials file, no sign-in
}

// New returns the console's handler. sessions is nil when the server runs
// without a credentials file: the console then needs no sign-in.
func New(sessions *Sessions) *Handler {
	h := &Handler{files: map[string]*asset{}, sessions: sessions}
	fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets/")
		h.files[name] = newAsset(name, b)
		return nil
	})
	bu, err := buildBundle()
	if err != nil {
		bu = nil // the modules as they are, through the import map (TestBundle keeps this from happening)
	}
	if bu != nil {
		for name, b := range bu.files {
			h.files[bundleDir+name] = newAsset(name, b)
		}
	}
	h.buildIndex(bu)
	return h
}

// buildIndex writes into index.html the link to the stylesheet at its
// content-hashed URL (app.css?v=hash, cached for a year: a new binary
// with other content links to another URL) and the first page's code.
// With the bundle bu, that code is inline (the later views' files, which
// it imports when opened, have hashed names too). Without it, the
// modules import each other by plain relative names ("./api.js"), and an
// import map sends each to its hashed URL. The index itself is
// revalidated on each load.
func (h *Handler) buildIndex(bu *bundle) {
	idx := h.files["index.html"]
	i := bytes.Index(idx.body, []byte(assetsMarker))
	if i < 0 {
		return // the index links its assets itself
	}
	j := i + bytes.Index(idx.body[i:], []byte("-->")) + len("-->")
	url := func(name string) string { return "/console/" + name + "?v=" + h.files[name].version }
	imports := map[string]string{}
	for name := range h.files {
		if strings.HasSuffix(name, ".js") {
			imports["/console/"+name] = url(name)
		}
	}
	imap, _ := json.Marshal(map[string]any{"imports": imports}) // map keys are sorted: the same binary writes the same index
	inline := [][]byte{imap}
	head := idx.body[:i]
	var b bytes.Buffer
	if h.sessions == nil {
		// No credentials file, so no sign-in: the page need not ask the
		// server before its first API call, and it starts it at once, in
		// parallel with the modules (api.js takes the answer).
		head = bytes.Replace(head, []byte("<html "), []byte(`<html data-auth="off" `), 1)
		b.Write(head)
		inline = append(inline, []byte(firstRead))
		fmt.Fprintf(&b, "<script>%s</script>\n", firstRead)
	} else {
		b.Write(head)
	}
	tail := idx.body[j:]
	var app string
	if bu != nil {
		inline = inline[1:] // no import map
		// The first page's code is in the index: no script to fetch
		// before the list is drawn. Only the stylesheet is linked (and
		// named in the Link header, fetched before the index is parsed).
		fmt.Fprintf(&b, "<link rel=\"stylesheet\" href=\"%s\">\n", url("app.css"))
		h.indexLink = "<" + url("app.css") + ">; rel=preload; as=style"
		inline = append(inline, bu.first)
		// At the end of the body, async: it runs as soon as it is parsed
		// (the elements it uses are there by then), instead of waiting
		// for the whole document as a deferred module does.
		app = fmt.Sprintf("<script type=\"module\" async>%s</script>\n</body>", bu.first)
	} else {
		// The import map first: no stylesheet is pending, so nothing can
		// hold it up.
		fmt.Fprintf(&b, "<script type=\"importmap\">%s</script>\n", imap)
		fmt.Fprintf(&b, "<link rel=\"stylesheet\" href=\"%s\">\n", url("app.css"))
		for _, name := range firstView {
			fmt.Fprintf(&b, "<link rel=\"modulepreload\" href=\"%s\">\n", url(name))
		}
		app = fmt.Sprintf("<script type=\"module\" async src=\"%s\"></script>\n</body>", url("js/app.js"))
	}
	b.Write(bytes.Replace(tail, []byte("</body>"), []byte(app), 1))
	h.files["index.html"] = newAsset("index.html", b.Bytes())
	src := "script-src 'self'"
	for _, s := range inline {
		sum := sha256.Sum256(s)
		src += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	h.indexCSP = strings.Replace(basePolicy, "script-src 'self'", src, 1)
}

// firstRead is the index's one inline script on a server without sign-in:
// on the first page (the meshes list) it starts the list's API call while
// the modules load; api.js's request takes the answer instead of asking
// again. It is the call the list makes itself (api.listPage), the same as
// the CLI's.
const firstRead = `if(!location.hash||location.hash==='#/meshes'){const u='/v20190125/meshes?limit=50';` +
	`window.weftFirstRead={url:u,res:fetch(u,{credentials:'same-origin',cache:'no-store'}).then((r)=>r.text().then((b)=>[r,b]))}}`

// Sizes returns the assets' total size, raw and gzipped, in bytes.
func (h *Handler) Sizes() (raw, gzipped int) {
	for _, a := range h.files {
		raw += len(a.body)
		gzipped += len(a.gz)
	}
	return raw, gzipped
}

// basePolicy keeps the console's pages to their own origin: no inline
// script (but the index's own, each allowed by its hash), no framing.
const basePolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// securityHeaders set the content policy csp, and send no referrer to
// anything.
func securityHeaders(w http.ResponseWriter, csp string) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/console/")
	if (rest == "" || rest == "index.html") && h.indexCSP != "" {
		securityHeaders(w, h.indexCSP)
		if h.indexLink != "" {
			w.Header().Set("Link", h.indexLink)
		}
	} else {
		securityHeaders(w, basePolicy)
	}
	if !ok {
		http.Redirect(w, r, "/console/", http.StatusMovedPermanently)
		return
	}
	if rest == "api/session" {
		h.serveSession(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if rest == "" {
		rest = "index.html"
	}
	a := h.files[rest]
	if a == nil {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	if strings.HasPrefix(rest, bundleDir) || (rest != "index.html" && r.URL.Query().Get("v") == a.version) {
		// A content-hashed URL: what it names never changes.
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache") // revalidate: a new binary serves new assets
	}
	hd.Add("Vary", "Accept-Encoding")
	body, etag := a.body, a.etag
	if acceptsGzip(r) {
		hd.Set("Content-Encoding", "gzip")
		body, etag = a.gz, a.gzEtag
	}
	hd.Set("ETag", etag)
	if noneMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.Itoa(len(body))) // known: sent in one piece, not chunked
	w.Write(body)
}

// noneMatch reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for If-None-Match) or is "*".
func noneMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if strings.TrimSpace(strings.SplitN(part, ";", 2)[0]) == "gzip" {
			return true
		}
	}
	return false
}
