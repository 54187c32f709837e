package console

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/first/*.html")

// firstViewParts keeps of a served index what the first view draws: the
// html element's start tag, the who bar, the view and the data block;
// sessionSecrets are a session's values that change with each sign-in.
var (
	firstViewParts = regexp.MustCompile(`(?s)<html [^>]*>|<div id="who" class="who">.*?</div>\n|<main id="view" tabindex="-1">.*</main>|<script type="application/json".*?</script>`)
	sessionSecrets = regexp.MustCompile(`"(csrf|expires)":"[^"]*"`)
)

// TestFirstViewGolden: the first view drawn for each kind of answer and
// caller is the page in testdata/first (rewritten with -update): every
// name, ARN and message escaped, the sign-in form, the who bar with and
// without sign-in.
func TestFirstViewGolden(t *testing.T) {
	const list = `{"meshes":[{"meshName":"a<b&c\"d","arn":"arn:aws:appmesh:us-east-1:111122223333:mesh/a<b&c\"d","version":2,"lastUpdatedAt":1796280647.833},` +
		`{"meshName":"plain","arn":"arn:aws:appmesh:us-east-1:111122223333:mesh/plain","version":1,"lastUpdatedAt":1796280600}],"nextToken":"t1"}`
	for _, c := range []struct {
		name      string
		auth      bool
		signedIn  bool
		status    int
		errorType string
		body      string
	}{
		{name: "meshes", status: 200, body: list},
		{name: "meshes-odd-names", status: 200, body: `{"meshes":[{"meshName":"p+q'(r) s/t","arn":"arn:aws:appmesh:us-east-1:111122223333:mesh/p+q'(r) s/t","version":1}]}`},
		{name: "empty", status: 200, body: `{"meshes":[]}`},
		{name: "error", status: 403, errorType: "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/",
			body: `{"message":"User: arn:aws:iam::111122223333:user/a<b> is not authorized to perform: appmesh:ListMeshes on resource: * & \"more\" + 'x'"}`},
		{name: "signin", auth: true, status: 200, body: list},
		{name: "signed-in", auth: true, signedIn: true, status: 200, body: list},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s *Sessions
			if c.auth {
				s = NewSessions(keys(t, oneKey), SessionLimits{}, nil)
			}
			h := New(s)
			h.UseAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if c.errorType != "" {
					w.Header().Set("x-amzn-ErrorType", c.errorType)
				}
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			r := httptest.NewRequest("GET", "/console/", nil)
			if c.signedIn {
				id, _, err := s.signIn("AKID1", "secret-one")
				if err != nil {
					t.Fatal(err)
				}
				r.AddCookie(&http.Cookie{Name: CookieName, Value: id})
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			var got []byte
			for _, m := range firstViewParts.FindAll(w.Body.Bytes(), -1) {
				got = append(append(got, m...), '\n')
			}
			got = sessionSecrets.ReplaceAll(got, []byte(`"$1":"..."`))
			p := filepath.Join("testdata", "first", c.name+".html")
			if *update {
				if err := os.WriteFile(p, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("the first view differs from %s (-update rewrites it):\ngot:\n%s\nwant:\n%s", p, got, want)
			}
		})
	}
}

// BenchmarkFirstView: the server's time to draw /console/ for one
// request, the meshes list of 3 and of 50 meshes (the first page's
// limit) from an API answer in memory, gzipped as a browser asks.
func BenchmarkFirstView(b *testing.B) {
	for _, n := range []int{3, 50} {
		b.Run(fmt.Sprintf("meshes=%d", n), func(b *testing.B) {
			var list strings.Builder
			list.WriteString(`{"meshes":[`)
			for i := range n {
				if i > 0 {
					list.WriteString(",")
				}
				fmt.Fprintf(&list, `{"meshName":"mesh-%d","arn":"arn:aws:appmesh:us-east-1:111122223333:mesh/mesh-%d","version":%d,"lastUpdatedAt":1796280647.833}`, i, i, i+1)
			}
			list.WriteString(`]}`)
			body := list.String()
			h := New(nil)
			h.UseAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, body)
			}))
			r := httptest.NewRequest("GET", "/console/", nil)
			r.Header.Set("Accept-Encoding", "gzip")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}
