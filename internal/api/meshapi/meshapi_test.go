package meshapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/store/bolt"
)

func newHandler(t testing.TB) *Handler {
	h, _ := newHandlerStore(t)
	return h
}

// newHandlerStore is newHandler with its store, to see what requests wrote.
func newHandlerStore(t testing.TB) (*Handler, *bolt.Store) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return New(ops.New(st, ops.Config{}, log), Config{DefaultAccount: "111122223333"}, log), st
}

func TestEveryOperationServed(t *testing.T) {
	h := newHandler(t)
	m := appmesh.Model()
	if len(m.Operations) != 38 {
		t.Fatalf("the model has %d operations, want 38", len(m.Operations))
	}
	served := map[string]*route{}
	for _, rt := range h.routes {
		served[rt.op.Name] = rt
	}
	for name, op := range m.Operations {
		rt := served[name]
		if rt == nil {
			t.Errorf("%s has no implementation", name)
			continue
		}
		if rt.input.Name() != op.Input {
			t.Errorf("%s decodes its input into %v, want the type of shape %s", name, rt.input, op.Input)
		}
		if p := m.Shapes[op.Output].Payload; (p != "") != (rt.payload >= 0 || rt.raw) {
			t.Errorf("%s: payload %q but field index %d", name, p, rt.payload)
		}
	}
}

// TestRouting checks that every operation's own template, filled in, routes
// to that operation and no other, with the path variables unescaped.
func TestRouting(t *testing.T) {
	h := newHandler(t)
	for name, op := range appmesh.Model().Operations {
		path := op.URI
		for _, seg := range strings.Split(op.URI, "/") {
			if strings.HasPrefix(seg, "{") {
				path = strings.Replace(path, seg, url.PathEscape("a/b "+strings.Trim(seg, "{}")), 1)
			}
		}
		u, err := url.Parse(path)
		if err != nil {
			t.Fatal(err)
		}
		segs, err := pathSegments(u)
		if err != nil {
			t.Fatal(err)
		}
		rt, vars, _ := h.match(op.Method, segs)
		if rt == nil || rt.op.Name != name {
			t.Errorf("%s %s routes to %v, want %s", op.Method, path, rt, name)
			continue
		}
		for k, v := range vars {
			if v != "a/b "+k {
				t.Errorf("%s: variable %s = %q", name, k, v)
			}
		}
	}
}

// TestHTTPErrors: bad requests get AWS's error for them and write nothing.
func TestHTTPErrors(t *testing.T) {
	h, st := newHandlerStore(t)
	cases := []struct {
		name, method, target, body string
		status                     int
		errType, message           string
	}{
		{"unknown path", "GET", "/v20190125/nothing", "", 404, "UnknownOperationException", "no operation"},
		{"unknown deep path", "GET", "/v20190125/meshes/m/virtualNodes/n/extra", "", 404, "UnknownOperationException", ""},
		{"empty name", "GET", "/v20190125/meshes//virtualNodes", "", 404, "UnknownOperationException", ""},
		{"wrong method", "POST", "/v20190125/meshes", "{}", 405, "MethodNotAllowedException", "POST"},
		{"malformed JSON", "PUT", "/v20190125/meshes", `{"meshName":`, 400, "BadRequestException", "not valid JSON"},
		{"trailing data", "PUT", "/v20190125/meshes", `{"meshName":"m"} {}`, 400, "BadRequestException", "data after"},
		{"trailing bracket", "PUT", "/v20190125/meshes", `{"meshName":"t1"}]`, 400, "BadRequestException", "data after"},
		{"trailing braces", "PUT", "/v20190125/meshes", `{"meshName":"t2"}}}}`, 400, "BadRequestException", "data after"},
		// encoding/json matches names regardless of case, the last one
		// winning: a member's name in another case must not slip past
		// validation or replace a name the URL gives.
		{"member in another case", "PUT", "/v20190125/meshes", `{"meshName":"ok","meshname":""}`, 400, "BadRequestException", "'meshname'"},
		{"URI member in another case", "PUT", "/v20190125/meshes/m1/virtualNodes/x", `{"spec":{},"meshname":"m2"}`, 400, "BadRequestException", "'meshname'"},
		{"nested member in another case", "PUT", "/v20190125/meshes", `{"meshName":"ok","spec":{"egressFilter":{"type":"DROP_ALL","TYPE":"SOME"}}}`, 400, "BadRequestException", "spec.egressFilter.TYPE"},
		{"not an object", "PUT", "/v20190125/meshes", `["m"]`, 400, "BadRequestException", "JSON object"},
		{"wrong type", "PUT", "/v20190125/meshes", `{"meshName":5}`, 400, "BadRequestException", "Value '5' at 'meshName' failed to satisfy constraint: Member must be a string"},
		{"missing required", "PUT", "/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"n"}`, 400, "BadRequestException", "Value null at 'spec' failed to satisfy constraint: Member must not be null"},
		{"bad enum", "PUT", "/v20190125/meshes", `{"meshName":"m","spec":{"egressFilter":{"type":"SOME"}}}`, 400, "BadRequestException", "spec.egressFilter.type"},
		{"limit not a number", "GET", "/v20190125/meshes?limit=ten", "", 400, "BadRequestException", "'limit'"},
		{"limit too small", "GET", "/v20190125/meshes?limit=0", "", 400, "BadRequestException", "greater than or equal to 1"},
		{"limit too small, leading zeros", "GET", "/v20190125/meshes?limit=-00", "", 400, "BadRequestException", "greater than or equal to 1"},
		{"limit beyond 64 bits", "GET", "/v20190125/meshes?limit=99999999999999999999", "", 400, "BadRequestException", "'limit'"},
		{"bad meshOwner", "GET", "/v20190125/meshes/m?meshOwner=1", "", 400, "BadRequestException", "'meshOwner'"},
		{"body too large", "PUT", "/v20190125/meshes", `{"meshName":"m","x":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "RequestEntityTooLargeException", "exceeds"},
		{"missing mesh", "GET", "/v20190125/meshes/absent", "", 404, "NotFoundException", "absent"},
		{"tag without arn", "PUT", "/v20190125/tag", `{"tags":[]}`, 400, "BadRequestException", "resourceArn"},
		// What botocore's model leaves unbounded but no proxy can be
		// configured with (the checks appmesh.Model adds): accepted, each
		// froze the proxies of the nodes that read it.
		{"empty DNS hostname", "PUT", "/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"n","spec":{"serviceDiscovery":{"dns":{"hostname":""}}}}`,
			400, "BadRequestException", "spec.serviceDiscovery.dns.hostname"},
		{"DNS hostname with a newline", "PUT", "/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"n","spec":{"serviceDiscovery":{"dns":{"hostname":"a\nb"}}}}`,
			400, "BadRequestException", "control characters"},
		{"backend with a newline", "PUT", "/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"n","spec":{"backends":[{"virtualService":{"virtualServiceName":"x\ny"}}]}}`,
			400, "BadRequestException", "spec.backends.1.member.virtualService.virtualServiceName"},
		{"invalid regex", "PUT", "/v20190125/meshes/m/virtualRouter/r/routes",
			`{"routeName":"x","spec":{"httpRoute":{"match":{"path":{"regex":"(["}},"action":{"weightedTargets":[{"virtualNode":"n","weight":1}]}}}}`,
			400, "BadRequestException", "spec.httpRoute.match.path.regex"},
		{"duration beyond protobuf's", "PUT", "/v20190125/meshes/m/virtualNodes",
			`{"virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":9223372036854775807}}}}]}}`,
			400, "BadRequestException", "less than or equal to 315576000000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := st.Revision()
			req := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			if after := st.Revision(); after != before {
				t.Fatalf("a rejected request changed the store (revision %d -> %d)", before, after)
			}
			if got := w.Header().Get("x-amzn-ErrorType"); got != c.errType {
				t.Fatalf("x-amzn-ErrorType %q, want %q", got, c.errType)
			}
			if w.Header().Get("x-amzn-RequestId") == "" {
				t.Error("no x-amzn-RequestId")
			}
			var body struct {
				Message string `json:"message"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("error body %q: %v", w.Body, err)
			}
			if !strings.Contains(body.Message, c.message) {
				t.Fatalf("message %q does not contain %q", body.Message, c.message)
			}
		})
	}
}

func TestCallerAccount(t *testing.T) {
	h := newHandler(t)
	for _, c := range []struct{ auth, owner string }{
		{"AWS4-HMAC-SHA256 Credential=444455556666/20260101/us-east-1/appmesh/aws4_request, SignedHeaders=host, Signature=x", "444455556666"},
		{"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/appmesh/aws4_request, SignedHeaders=host, Signature=x", "111122223333"},
		{"", "111122223333"},
	} {
		req := httptest.NewRequest("PUT", "/v20190125/meshes", strings.NewReader(`{"meshName":"m-`+c.owner+`-`+c.auth[:min(len(c.auth), 20)]+`"}`))
		req.Header.Set("Authorization", c.auth)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("create: %d %s", w.Code, w.Body)
		}
		var got appmesh.MeshData
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if *got.Metadata.MeshOwner != c.owner || *got.Metadata.ResourceOwner != c.owner {
			t.Errorf("auth %q: owner %s, want %s", c.auth, *got.Metadata.MeshOwner, c.owner)
		}
	}
}

// TestQueryIntegerLeadingZeros: an integer query parameter with leading
// zeros is the number it spells, as AWS reads it: "limit=007" lists. It
// was encoded as a JSON number as written, which JSON refuses: a 500.
func TestQueryIntegerLeadingZeros(t *testing.T) {
	h, _ := newHandlerStore(t)
	for _, target := range []string{"/v20190125/meshes?limit=007", "/v20190125/meshes?limit=00100"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		if w.Code != 200 {
			t.Errorf("GET %s: %d %s", target, w.Code, w.Body)
		}
	}
}

// TestServiceNameControlCharacters: a virtual service name with a control
// character is refused and changes nothing. It was accepted, and froze the
// proxies of the nodes that named it as a backend: Envoy refuses it as a
// virtual host's domain.
func TestServiceNameControlCharacters(t *testing.T) {
	h, st := newHandlerStore(t)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("PUT", "/v20190125/meshes", strings.NewReader(`{"meshName":"m"}`)))
	if w.Code != 200 {
		t.Fatalf("CreateMesh: %d %s", w.Code, w.Body)
	}
	before := st.Revision()
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("PUT", "/v20190125/meshes/m/virtualServices", strings.NewReader(`{"virtualServiceName":"a b\n","spec":{}}`)))
	if w.Code != 400 || !strings.Contains(w.Body.String(), "control characters") {
		t.Fatalf("CreateVirtualService with a newline in its name: %d %s", w.Code, w.Body)
	}
	if st.Revision() != before {
		t.Fatal("a refused CreateVirtualService changed the store")
	}
}
