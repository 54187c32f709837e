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
	"sync"

	esbuild "github.com/evanw/esbuild/pkg/api"
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
	indexCSP string            // the index's policy: the base one and its inline scripts' and style's hashes
	// indexParts is the index split at its holes (indexHoles), which
	// serveIndex fills for each request; nil: the index is served as is.
	indexParts [][]byte
	sessions   *Sessions // nil: no credentials file, no sign-in
	// api is the API's handler chain (its Guard included), which the
	// first view is read through; nil: the page's module reads it.
	api               http.Handler
	first             *firstViews // the first view's templates
	maxFirstViewBytes int
	gzips             sync.Pool // *gzip.Writer, for the index
}

// UseAPI names the API's handler chain, the one the browser's and the
// CLI's requests go through (its authentication and authorization
// included): the index's first view is read through it. It must be called
// before the handler serves.
func (h *Handler) UseAPI(api http.Handler) { h.api = api }

// New returns the console's handler. sessions is nil when the server runs
// without a credentials file: the console then needs no sign-in.
func New(sessions *Sessions) *Handler {
	h := &Handler{files: map[string]*asset{}, sessions: sessions, first: newFirstViews(), maxFirstViewBytes: DefaultMaxFirstViewBytes}
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

// The index's holes, filled on each request (serveIndex): the html
// element's attributes, the who bar, the view, the data block.
var indexHoles = []string{"<html ", "<!-- weft:who -->", "<!-- weft:view -->", "<!-- weft:data -->"}

// deepLink is the index's script in the head: on a page opened at
// another view than the meshes list (a link to a route, say), it hides
// the meshes list the server drew until the module draws that view
// (app.js's route() shows #view again).
const deepLink = `const d=document.documentElement;if(d.dataset.first==='meshes'&&location.hash&&location.hash!=='#/meshes')d.classList.add('weft-deep')`

// firstCode is the index's script that loads the first page's code (%s:
// its URL) once the first paint is on the screen (a "paint" performance
// entry is reported when the frame is presented), so that compiling and
// running it takes no CPU from drawing the list. Without the Paint
// Timing API, after the first frame; a hidden page, which paints
// nothing, loads it at once; a second at most in any case. A page opened
// at another view (deepLink's weft-deep) has nothing of ours to paint
// before the code runs, so it loads the code at once.
const firstCode = `(()=>{let d=0;const go=()=>{if(!d){d=1;import('%s')}};` +
	`if(document.documentElement.classList.contains('weft-deep')){go();return}` +
	`try{new PerformanceObserver(go).observe({type:'paint',buffered:true})}catch{requestAnimationFrame(()=>setTimeout(go,0))}` +
	`setTimeout(go,document.hidden?0:1000)})()`

// buildIndex writes into index.html the stylesheet, inline (no request
// before the first paint; allowed by its hash), and the first page's
// code. With the bundle bu, that code is a file loaded once the first
// view (drawn by the server) is painted; the later views' files, which
// it imports when opened, have hashed names too. Without it,
// the modules import each other by plain relative names ("./api.js"),
// and an import map sends each to its hashed URL. The index is then
// split at its holes, which serveIndex fills for each request.
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
	css := minifyCSS(h.files["app.css"].body)
	inline := [][]byte{[]byte(deepLink)}
	var b bytes.Buffer
	head := idx.body[:i]
	if h.sessions == nil {
		// No credentials file, so no sign-in: the page need not ask the
		// server for a session.
		head = bytes.Replace(head, []byte("<html "), []byte(`<html data-auth="off" `), 1)
	}
	b.Write(head)
	fmt.Fprintf(&b, "<script>%s</script>\n<style>%s</style>\n", deepLink, css)
	tail := idx.body[j:]
	var app string
	if bu != nil {
		// The first view is in the HTML: the first page's code is not
		// needed to show it, only to use it. It is a file of its own
		// (content-hashed, cached for a year), loaded once the first
		// paint is shown (see firstCode): neither fetching it nor
		// compiling and running it holds up the first paint.
		first := newAsset("first.js", bu.first)
		name := bundleDir + "first-" + first.version + ".js"
		h.files[name] = first
		loader := fmt.Sprintf(firstCode, "/console/"+name)
		inline = append(inline, []byte(loader))
		app = fmt.Sprintf("%s<script>%s</script>\n</body>", indexHoles[3], loader)
	} else {
		inline = append(inline, imap)
		fmt.Fprintf(&b, "<script type=\"importmap\">%s</script>\n", imap)
		for _, name := range firstView {
			fmt.Fprintf(&b, "<link rel=\"modulepreload\" href=\"%s\">\n", url(name))
		}
		app = fmt.Sprintf("%s<script type=\"module\" async src=\"%s\"></script>\n</body>", indexHoles[3], url("js/app.js"))
	}
	b.Write(bytes.Replace(tail, []byte("</body>"), []byte(app), 1))
	page := b.Bytes()
	// Split at the holes, in the order they come in the page.
	var parts [][]byte
	for k, hole := range indexHoles {
		n := bytes.Index(page, []byte(hole))
		if n < 0 {
			return // served as the module draws it: no holes
		}
		if k == 0 {
			n += len(hole) // after "<html "
			parts = append(parts, page[:n])
			page = page[n:]
			continue
		}
		parts = append(parts, page[:n])
		page = page[n+len(hole):]
	}
	h.indexParts = append(parts, page)
	h.files["index.html"] = newAsset("index.html", h.index(firstPage{}))
	src := "script-src 'self'"
	for _, s := range inline {
		sum := sha256.Sum256(s)
		src += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	sum := sha256.Sum256(css)
	policy := strings.Replace(basePolicy, "script-src 'self'", src, 1)
	h.indexCSP = strings.Replace(policy, "style-src 'self'", "style-src 'self' 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'", 1)
}

// index returns the index with the first view fv in its holes; the zero
// firstPage is the page the module draws itself ("Loading…").
func (h *Handler) index(fv firstPage) []byte {
	view := fv.view
	if view == "" {
		view = `<p class="muted">Loading…</p>`
	}
	attr := ""
	if fv.page != "" {
		attr = `data-first="` + fv.page + `" `
	}
	data := ""
	if fv.data.Session != nil || fv.data.List != nil {
		data = dataBlock(fv.data)
	}
	p := h.indexParts
	var b bytes.Buffer
	b.Grow(len(p[0]) + len(p[1]) + len(p[2]) + len(p[3]) + len(p[4]) + len(view) + len(data) + len(fv.who) + 64)
	b.Write(p[0])
	b.WriteString(attr)
	b.Write(p[1])
	b.WriteString(fv.who)
	b.Write(p[2])
	b.WriteString(view)
	b.Write(p[3])
	b.WriteString(data)
	b.Write(p[4])
	return b.Bytes()
}

// serveIndex serves /console/: the index with the first view drawn for
// this caller (its session's key), so no cache may store it.
func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	fv, ok := h.renderFirst(r)
	if !ok {
		// The module draws the view; the session, when known, is still
		// handed over.
		fv = firstPage{who: fv.who, data: firstData{Session: fv.data.Session}}
	}
	body := h.index(fv)
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Vary", "Cookie, Accept-Encoding")
	if acceptsGzip(r) {
		var gz bytes.Buffer
		zw, _ := h.gzips.Get().(*gzip.Writer)
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		} else {
			zw.Reset(&gz)
		}
		zw.Write(body)
		zw.Close()
		h.gzips.Put(zw)
		body = gz.Bytes()
		hd.Set("Content-Encoding", "gzip")
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body)
}

// minifyCSS returns the stylesheet minified (esbuild, in process), or as
// it is if it cannot be: fewer bytes to parse before the first paint.
func minifyCSS(b []byte) []byte {
	res := esbuild.Transform(string(b), esbuild.TransformOptions{Loader: esbuild.LoaderCSS,
		MinifyWhitespace: true, MinifySyntax: true, LogLevel: esbuild.LogLevelSilent})
	if len(res.Errors) > 0 || len(res.Code) == 0 {
		return bytes.TrimSpace(b)
	}
	return bytes.TrimSpace(res.Code)
}

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
	isIndex := rest == "" || rest == "index.html"
	if isIndex && h.indexCSP != "" {
		securityHeaders(w, h.indexCSP)
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
	if isIndex && h.indexParts != nil {
		h.serveIndex(w, r)
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
