package meshapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzHandler sends arbitrary methods, paths, query strings and bodies to
// the App Mesh API on one store that keeps what earlier inputs created.
// Whatever arrives, the answer is an AWS-shaped response below 500, never a
// panic. The seed corpus is in testdata/fuzz/FuzzHandler.
func FuzzHandler(f *testing.F) {
	f.Add("PUT", "/v20190125/meshes", "", []byte(`{"meshName":"m"}`))
	f.Add("PUT", "/v20190125/meshes/m/virtualNodes", "", []byte(`{"virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"}}]}}`))
	f.Add("GET", "/v20190125/meshes/m/virtualNodes", "limit=1&nextToken=bg", []byte(nil))
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		req := &http.Request{
			Method:     method,
			URL:        &url.URL{Path: path, RawQuery: query},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{},
			Body:       io.NopCloser(bytes.NewReader(body)),
			Host:       "weft.test",
		}
		req = req.WithContext(t.Context())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("%s %s?%s %q: status %d: %s", method, path, query, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			if w.Header().Get("x-amzn-ErrorType") == "" {
				t.Fatalf("%s %s: %d without x-amzn-ErrorType", method, path, w.Code)
			}
			var e struct {
				Message *string `json:"message"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Message == nil {
				t.Fatalf("%s %s: error body %q", method, path, w.Body)
			}
			return
		}
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") || !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: 2xx body is not JSON: %q", method, path, w.Body)
		}
	})
}
