package console

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The first view, drawn by the server into the index: the meshes list
// (or its error), or the sign-in form. The list is read through the same
// handler chain a browser's or the CLI's request goes through (the API's
// Guard included: with a credentials file, the session's key and exactly
// its permissions), never from the store directly. The page's module then
// draws the same view from the same answer, which the index carries too:
// the DOM it makes is the one the server drew.

const (
	// firstListURL is the first page's API call, the one the meshes list
	// makes itself (api.listPage('mesh')).
	firstListURL = "/v20190125/meshes?limit=50"
	// DefaultMaxFirstViewBytes bounds the API answer the server draws the
	// first view from; a larger one is not drawn (the page's module reads
	// the list itself). 50 meshes are about 15 KB.
	DefaultMaxFirstViewBytes = 1 << 20
)

// firstData is what the index hands the page's module (a JSON data block,
// id weft-first): the session, as GET /console/api/session says it, and
// the first list's answer, as the API gave it.
type firstData struct {
	Session *sessionInfo `json:"session,omitempty"`
	List    *firstAnswer `json:"list,omitempty"`
}

// firstAnswer is one API answer: its URL, status, error type header and
// body.
type firstAnswer struct {
	URL       string `json:"url"`
	Status    int    `json:"status"`
	ErrorType string `json:"errorType,omitempty"`
	Body      string `json:"body"`
}

// firstPage is the first view drawn for one request.
type firstPage struct {
	view   string    // #view's content
	who    string    // #who's content
	page   string    // "meshes", "signin": the html element's data-first
	data   firstData // for the module
	hasAns bool      // data.List is set
}

// renderFirst draws the first view for r: with sign-in and no live
// session, the sign-in form; else the meshes list as the caller's
// request to the API returns it. ok is false when it cannot be drawn (no
// API to ask, or an answer over the bound): the index then says
// "Loading…" and the module draws the view.
func (h *Handler) renderFirst(r *http.Request) (fv firstPage, ok bool) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, firstListURL, nil)
	if err != nil {
		return fv, false
	}
	if h.sessions == nil {
		fv.who = h.first.whoOff
	} else {
		se, key, aerr, _ := h.sessions.lookup(r)
		if se == nil || aerr != nil {
			in := sessionInfo{Auth: true}
			fv.data.Session = &in
			fv.view, fv.page = h.first.signIn, "signin"
			return fv, true
		}
		in := info(se, key)
		fv.data.Session = &in
		if fv.who, ok = h.first.exec("who", in); !ok {
			return firstPage{}, false
		}
		// The request the page's module would send: the session's
		// cookie and its CSRF token, authenticated and authorized by the
		// API's Guard as any other.
		c, _ := r.Cookie(CookieName)
		req.AddCookie(&http.Cookie{Name: CookieName, Value: c.Value})
		req.Header.Set(CSRFHeader, se.csrf)
	}
	if h.api == nil {
		return fv, false
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	cw := &captureWriter{header: http.Header{}, max: h.maxFirstViewBytes}
	h.api.ServeHTTP(cw, req)
	if cw.over {
		return fv, false
	}
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	ans := &firstAnswer{URL: firstListURL, Status: cw.status, ErrorType: cw.header.Get("x-amzn-ErrorType"), Body: cw.body.String()}
	fv.data.List, fv.hasAns, fv.page = ans, true, "meshes"
	if fv.view, ok = h.first.meshesView(ans); !ok {
		return firstPage{}, false
	}
	return fv, true
}

// captureWriter keeps an in-process answer, at most max bytes of body.
type captureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	max    int
	over   bool
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.body.Len()+len(b) > c.max {
		c.over = true
		return 0, fmt.Errorf("first view: the answer is over %d bytes", c.max)
	}
	return c.body.Write(b)
}

// firstTemplates is the first view's markup (templates/first.html).
//
//go:embed templates/first.html
var firstTemplates string

// firstViews are the first view's templates, parsed once when the
// handler is made, and what of them does not change between requests,
// drawn then: html/template escapes every name, ARN and message, in
// text, attributes and URLs alike.
type firstViews struct {
	t      *template.Template
	whoOff string // the who bar without sign-in
	signIn string // the sign-in form
}

// newFirstViews parses templates/first.html (its line breaks and the
// indentation after them taken out). An error is the binary's own, which
// TestFirstViewGolden catches.
func newFirstViews() *firstViews {
	var src strings.Builder
	for i, line := range strings.Split(firstTemplates, "\n") {
		if i > 0 {
			line = strings.TrimLeft(line, " \t")
		}
		src.WriteString(line)
	}
	f := &firstViews{t: template.Must(template.New("first").Parse(src.String()))}
	f.whoOff, _ = f.exec("who-off", nil)
	f.signIn, _ = f.exec("signin", nil)
	return f
}

// exec draws the template name with data; ok is false if it cannot be
// drawn (the page's module then draws the view).
func (f *firstViews) exec(name string, data any) (string, bool) {
	var b strings.Builder
	if err := f.t.ExecuteTemplate(&b, name, data); err != nil {
		return "", false
	}
	return b.String(), true
}

// meshRow is one row of the meshes list, as the template shows it.
type meshRow struct {
	Href, Name, Version, When, ARN string
}

// meshItem is what the meshes list shows of each mesh.
type meshItem struct {
	MeshName      string          `json:"meshName"`
	ARN           string          `json:"arn"`
	Version       json.Number     `json:"version"`
	LastUpdatedAt json.RawMessage `json:"lastUpdatedAt"`
}

// meshesView is lists.js's meshesView (and, for an error, app.js's error
// view) for the API's answer.
func (f *firstViews) meshesView(ans *firstAnswer) (string, bool) {
	var data struct {
		Meshes    []meshItem `json:"meshes"`
		NextToken string     `json:"nextToken"`
		Message   string     `json:"message"`
		Message2  string     `json:"Message"`
		Type      string     `json:"__type"`
	}
	perr := json.Unmarshal([]byte(ans.Body), &data)
	if ans.Status < 200 || ans.Status > 299 {
		// api.js's ApiError, as errorBox shows it.
		typ := ans.ErrorType
		if typ == "" {
			typ = data.Type
		}
		if typ == "" {
			typ = "HTTP " + strconv.Itoa(ans.Status)
		}
		typ, _, _ = strings.Cut(typ, ":")
		msg := data.Message
		if msg == "" {
			msg = data.Message2
		}
		if perr != nil || msg == "" {
			return "", false // the module says it as the browser does
		}
		return f.exec("error", struct{ Type, Message string }{typ, msg})
	}
	if perr != nil {
		return "", false
	}
	rows := make([]meshRow, 0, len(data.Meshes))
	for _, m := range data.Meshes {
		when, ok := whenText(m.LastUpdatedAt)
		if !ok {
			return "", false
		}
		rows = append(rows, meshRow{Href: "#/mesh/" + encodeURIComponent(m.MeshName), Name: m.MeshName,
			Version: m.Version.String(), When: when, ARN: m.ARN})
	}
	return f.exec("meshes", struct {
		Meshes []meshRow
		More   bool
	}{rows, data.NextToken != ""})
}

// whenText is dom.js's when() for an App Mesh timestamp (seconds since
// the epoch, a JSON number): the time in UTC to the second.
func whenText(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", false
	}
	if f == 0 {
		return "", true // when(0) is ''
	}
	ms := math.Trunc(f * 1000) // new Date(t * 1000), as the module computes it
	if math.Abs(ms) > 8.64e15 {
		return "", false
	}
	return time.UnixMilli(int64(ms)).UTC().Format("2006-01-02 15:04:05") + " UTC", true
}

// encodeURIComponent is JavaScript's: every byte of the UTF-8 but
// A-Z a-z 0-9 - _ . ! ~ * ' ( ) percent-encoded.
func encodeURIComponent(s string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// dataBlock is the index's JSON data block for the module: not a script
// the browser runs (no hash in the policy needed), and <, > and & are
// escaped in it, so no text in it can end the element.
func dataBlock(d firstData) string {
	b, err := json.Marshal(d) // escapes <, >, &, U+2028 and U+2029
	if err != nil {
		return ""
	}
	return `<script type="application/json" id="weft-first">` + string(b) + "</script>\n"
}
