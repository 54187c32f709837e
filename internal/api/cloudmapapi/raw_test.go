package cloudmapapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// newHandler is the API handler on a fresh store, without a socket: for
// the fuzz target, which runs it many thousand times.
func newHandler(t testing.TB) (http.Handler, *bolt.Store) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := cloudmap.NewRegistry(st, cloudmap.Config{Region: region, AccountID: account})
	return &api.Handler{CloudMap: cloudmapapi.New(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))}, st
}

// awsError is an awsJson1.1 error body.
type awsError struct {
	Type    string `json:"__type"`
	Message string `json:"Message"`
}

// TestRawRequests sends what no SDK would: wrong types, broken JSON, other
// methods. Each gets a 400 with the AWS error (413 for a body over
// MaxBodyBytes), and nothing is written.
func TestRawRequests(t *testing.T) {
	ts := newServer(t, filepath.Join(t.TempDir(), "weft.db"))
	post := func(method, target, body string) (int, http.Header, awsError, string) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+"/", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
		}
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e awsError
		json.Unmarshal(b, &e)
		return resp.StatusCode, resp.Header, e, string(b)
	}
	const cm = cloudmapapi.TargetPrefix
	ok, _, _, body := post("POST", cm+"ListNamespaces", "")
	if ok != http.StatusOK || !strings.Contains(body, `"Namespaces":[]`) {
		t.Fatalf("ListNamespaces with an empty body: %d %s", ok, body)
	}
	rev := ts.st.Revision()
	tests := []struct {
		name, method, target, body string
		code, message              string // want; message is a substring
	}{
		{"wrong type", "POST", cm + "CreateHttpNamespace", `{"Name": 5}`, "InvalidInput", "Value '5' at 'Name' failed to satisfy constraint: Member must be a string"},
		{"missing required", "POST", cm + "CreatePrivateDnsNamespace", `{"Name": "a.local"}`, "InvalidInput", "Value null at 'Vpc' failed to satisfy constraint: Member must not be null"},
		{"wrong nested type", "POST", cm + "CreateService", `{"Name": "s", "NamespaceId": "ns-1", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": "60"}]}}`, "InvalidInput", "at 'DnsConfig.DnsRecords.1.member.TTL'"},
		{"enum", "POST", cm + "DiscoverInstances", `{"NamespaceName": "n", "ServiceName": "s", "HealthStatus": "SICK"}`, "InvalidInput", "Member must satisfy enum value set"},
		{"pattern", "POST", cm + "RegisterInstance", `{"ServiceId": "srv-1", "InstanceId": "a b", "Attributes": {}}`, "InvalidInput", "at 'InstanceId'"},
		{"attributes of the wrong type", "POST", cm + "RegisterInstance", `{"ServiceId": "srv-1", "InstanceId": "i", "Attributes": {"AWS_INSTANCE_IPV4": 10}}`, "InvalidInput", "Member must be a string"},
		{"not JSON", "POST", cm + "ListServices", `{"Filters": [`, "SerializationException", "not valid JSON"},
		{"not an object", "POST", cm + "ListServices", `[]`, "SerializationException", "JSON object"},
		{"data after the object", "POST", cm + "ListServices", `{} {}`, "SerializationException", "after"},
		{"a bracket after the object", "POST", cm + "CreateHttpNamespace", `{"Name": "t1"}]`, "SerializationException", "after"},
		// encoding/json matches names regardless of case, the last one
		// winning: a member's name in another case must not replace a
		// checked value (here: nil a required one, or empty a name).
		{"required member nulled in another case", "POST", cm + "UpdateHttpNamespace", `{"Id": "ns-1", "Namespace": {"Description": "d"}, "namespace": null}`, "InvalidInput", "'namespace'"},
		{"member in another case", "POST", cm + "CreateHttpNamespace", `{"Name": "ok", "name": ""}`, "InvalidInput", "'name'"},
		{"nested member in another case", "POST", cm + "CreateService", `{"Name": "s", "NamespaceId": "ns-1", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 60, "ttl": -7}]}}`, "InvalidInput", "ttl"},
		{"unknown operation", "POST", cm + "DropEverything", `{}`, "UnknownOperationException", "DropEverything"},
		{"another service's target", "POST", "AmazonEC2.ListServices", `{}`, "UnknownOperationException", ""},
		{"GET", "GET", cm + "ListNamespaces", ``, "UnknownOperationException", "POST"},
		{"too large", "POST", cm + "CreateHttpNamespace", `{"Name": "` + strings.Repeat("a", 2<<20) + `"}`, "RequestEntityTooLargeException", "exceeds 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, e, body := post(tt.method, tt.target, tt.body)
			want := http.StatusBadRequest
			if tt.code == "RequestEntityTooLargeException" {
				// An oversized body is 413, as on the App Mesh API.
				want = http.StatusRequestEntityTooLarge
			}
			if status != want {
				t.Errorf("status %d, want %d: %s", status, want, body)
			}
			if e.Type != tt.code || h.Get("x-amzn-ErrorType") != tt.code || !strings.Contains(e.Message, tt.message) {
				t.Errorf("error %+v (header %q), want %s containing %q", e, h.Get("x-amzn-ErrorType"), tt.code, tt.message)
			}
			if ct := h.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	if got := ts.st.Revision(); got != rev {
		t.Errorf("rejected requests wrote: revision %d -> %d", rev, got)
	}
}

func TestEveryOperationServed(t *testing.T) {
	h := cloudmapapi.New(cloudmap.NewRegistry(nil, cloudmap.Config{}), nil)
	served := map[string]bool{}
	for _, op := range h.Operations() {
		served[op] = true
	}
	for name := range cloudmap.Model().Operations {
		if !served[name] {
			t.Errorf("operation %s is not served", name)
		}
	}
}

// FuzzAPI sends arbitrary bodies to every operation: the answer is never
// a 5xx, and always JSON.
func FuzzAPI(f *testing.F) {
	for name := range cloudmap.Model().Operations {
		f.Add(name, []byte(`{}`))
	}
	f.Add("UpdateHttpNamespace", []byte(`{"Id":"ns-1","Namespace":{"Description":"d"},"namespace":null}`))
	f.Add("CreatePrivateDnsNamespace", []byte(`{"Name":"f.local","Vpc":"vpc-1"}`))
	f.Add("RegisterInstance", []byte(`{"ServiceId":"srv-x","InstanceId":"i","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}`))
	h, _ := newHandler(f)
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		req.Header.Set("X-Amz-Target", cloudmapapi.TargetPrefix+op)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: status %d: %s", op, body, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: body is not JSON: %q", op, body, rec.Body)
		}
		if rec.Code >= 400 && rec.Header().Get("x-amzn-ErrorType") == "" {
			t.Fatalf("%s %q: error %d without x-amzn-ErrorType", op, body, rec.Code)
		}
	})
}
