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
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// asset is one embedded file, gzipped once at start.
type asset struct {
	body, gz []byte
	ctype    string
	etag     string
}

// Handler serves everything under /console/: the assets, and the session
// endpoints under /console/api/.
type Handler struct {
	files    map[string]*asset // by path under assets/, "index.html" ...
	sessions *Sessions         // nil: no credentials file, no sign-in
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
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.files[strings.TrimPrefix(p, "assets/")] = &asset{body: b, gz: gz.Bytes(), ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return h
}

// Sizes returns the assets' total size, raw and gzipped, in bytes.
func (h *Handler) Sizes() (raw, gzipped int) {
	for _, a := range h.files {
		raw += len(a.body)
		gzipped += len(a.gz)
	}
	return raw, gzipped
}

// securityHeaders keep the console's pages to their own origin: no inline
// script, no framing, no referrer sent to anything.
func securityHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	rest, ok := strings.CutPrefix(r.URL.Path, "/console/")
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
	hd.Set("ETag", a.etag)
	hd.Set("Cache-Control", "no-cache") // revalidate: a new binary serves new assets
	hd.Add("Vary", "Accept-Encoding")
	if match := r.Header.Get("If-None-Match"); match == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if acceptsGzip(r) {
		hd.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if strings.TrimSpace(strings.SplitN(part, ";", 2)[0]) == "gzip" {
			return true
		}
	}
	return false
}
