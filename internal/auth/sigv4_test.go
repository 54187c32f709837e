package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const testKeys = `
keys:
  - id: AKIDADMIN
    secret: admin-secret
    account: "111122223333"
    user: admin
    allow:
      - actions: ["appmesh:*", "servicediscovery:*", "weft:*"]
        resources: ["*"]
  - id: AKIDMESHA
    secret: mesh-a-secret
    account: "444455556666"
    allow:
      - actions: ["appmesh:Describe*", "appmesh:List*", "appmesh:CreateVirtualNode"]
        resources: ["arn:aws:appmesh:*:444455556666:mesh/a", "arn:aws:appmesh:*:444455556666:mesh/a/*"]
`

func testVerifier(t testing.TB, now time.Time) *Verifier {
	t.Helper()
	ks, err := ParseKeys([]byte(testKeys))
	if err != nil {
		t.Fatal(err)
	}
	return &Verifier{Keys: StaticKeys(ks), Now: func() time.Time { return now }, Services: []string{"appmesh", "servicediscovery", "weft"}}
}

// signedRequest is a request as the server receives it, signed by
// aws-sdk-go-v2's signer at signTime.
func signedRequest(t testing.TB, id, secret string, signTime time.Time, body string, edit func(*http.Request)) *http.Request {
	t.Helper()
	r, err := http.NewRequest("PUT", "http://127.0.0.1:9080/v20190125/meshes/a%3Ab/virtualNodes?meshOwner=444455556666&x=1", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "test/1.0")
	if edit != nil {
		edit(r)
	}
	sum := sha256.Sum256([]byte(body))
	hash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" {
		hash = h
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, r, hash, "appmesh", "us-east-1", signTime); err != nil {
		t.Fatal(err)
	}
	// What the server sees: Host apart, the path as sent, the body unread.
	in, err := http.ReadRequest(bufioFromRequest(t, r))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func bufioFromRequest(t testing.TB, r *http.Request) *bufio.Reader {
	t.Helper()
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	return bufio.NewReader(&b)
}

func TestVerifyHTTP(t *testing.T) {
	now := time.Date(2026, 12, 2, 11, 30, 0, 0, time.UTC)
	v := testVerifier(t, now)
	body := `{"virtualNodeName":"n","spec":{}}`
	cases := []struct {
		name     string
		req      *http.Request
		body     string
		code     string // "" when it verifies
		contains string
	}{
		{"right key", signedRequest(t, "AKIDADMIN", "admin-secret", now, body, nil), body, "", ""},
		{"unsigned payload", signedRequest(t, "AKIDADMIN", "admin-secret", now, body, func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", UnsignedPayload) }), body, "", ""},
		{"session token signed", signedRequest(t, "AKIDADMIN", "admin-secret", now, body, func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "tok") }), body, "", ""},
		{"wrong secret", signedRequest(t, "AKIDADMIN", "not-the-secret", now, body, nil), body, CodeInvalidSignature, "does not match"},
		{"unknown key", signedRequest(t, "AKIDNOBODY", "admin-secret", now, body, nil), body, CodeUnrecognizedClient, "security token included in the request is invalid"},
		{"body changed", signedRequest(t, "AKIDADMIN", "admin-secret", now, body, nil), `{"virtualNodeName":"x","spec":{}}`, CodeInvalidSignature, "does not match"},
		{"content hash lies", signedRequest(t, "AKIDADMIN", "admin-secret", now, body, func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", EmptySHA256) }), body, CodeContentSHA256, "x-amz-content-sha256"},
		{"expired", signedRequest(t, "AKIDADMIN", "admin-secret", now.Add(-6*time.Minute), body, nil), body, CodeInvalidSignature, "Signature expired: 20261202T112400Z is now earlier than 20261202T112500Z (20261202T113000Z - 5 min.)"},
		{"not yet current", signedRequest(t, "AKIDADMIN", "admin-secret", now.Add(6*time.Minute), body, nil), body, CodeInvalidSignature, "Signature not yet current: 20261202T113600Z is still later than 20261202T113500Z (20261202T113000Z + 5 min.)"},
		{"within skew", signedRequest(t, "AKIDADMIN", "admin-secret", now.Add(-4*time.Minute), body, nil), body, "", ""},
	}
	missing, _ := http.NewRequest("GET", "http://127.0.0.1/v20190125/meshes", nil)
	cases = append(cases, struct {
		name     string
		req      *http.Request
		body     string
		code     string
		contains string
	}{"missing", missing, "", CodeMissingToken, "Missing Authentication Token"})
	presigned, _ := http.NewRequest("GET", "http://127.0.0.1/v20190125/meshes?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00", nil)
	cases = append(cases, struct {
		name     string
		req      *http.Request
		body     string
		code     string
		contains string
	}{"presigned", presigned, "", CodeIncomplete, "presigned"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := v.VerifyHTTP(c.req, []byte(c.body))
			if c.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if key.ID != "AKIDADMIN" || key.Account != "111122223333" {
					t.Fatalf("key %+v", key)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != c.code || !strings.Contains(e.Message, c.contains) {
				t.Fatalf("got %v, want %s containing %q", err, c.code, c.contains)
			}
			if e.Status != http.StatusForbidden && e.Status != http.StatusBadRequest {
				t.Fatalf("status %d", e.Status)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	ks, err := ParseKeys([]byte(testKeys))
	if err != nil {
		t.Fatal(err)
	}
	a := ks.Lookup("AKIDMESHA")
	cases := []struct {
		action, resource string
		want             bool
	}{
		{"appmesh:DescribeMesh", "arn:aws:appmesh:us-east-1:444455556666:mesh/a", true},
		{"APPMESH:describemesh", "arn:aws:appmesh:us-east-1:444455556666:mesh/a", true}, // actions ignore case
		{"appmesh:DescribeMesh", "arn:aws:appmesh:us-east-1:444455556666:mesh/b", false},
		{"appmesh:DescribeMesh", "arn:aws:appmesh:us-east-1:444455556666:mesh/ab", false},
		{"appmesh:CreateVirtualNode", "arn:aws:appmesh:us-east-1:444455556666:mesh/a/virtualNode/n", true},
		{"appmesh:DeleteVirtualNode", "arn:aws:appmesh:us-east-1:444455556666:mesh/a/virtualNode/n", false},
		{"appmesh:ListMeshes", "*", false},
		{"appmesh:DescribeMesh", "arn:aws:appmesh:us-east-1:111122223333:mesh/a", false},
	}
	for _, c := range cases {
		if got := a.Allowed(c.action, c.resource); got != c.want {
			t.Errorf("%s on %s: %t, want %t", c.action, c.resource, got, c.want)
		}
	}
	if !ks.Lookup("AKIDADMIN").Allowed("weft:CreateToken", "arn:aws:appmesh:us-east-1:1:mesh/m/virtualNode/n") {
		t.Error("admin denied")
	}
	if got := Denied(a, "appmesh:CreateMesh", "arn:aws:appmesh:us-east-1:444455556666:mesh/b").Message; got != "User: arn:aws:iam::444455556666:user/AKIDMESHA is not authorized to perform: appmesh:CreateMesh on resource: arn:aws:appmesh:us-east-1:444455556666:mesh/b" {
		t.Errorf("message %q", got)
	}
}

func TestParseKeysErrors(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":   "keys:\n  - id: a\n    secret: 12345678\n    account: '111122223333'\n    colour: red\n",
		"short secret":    "keys:\n  - id: a\n    secret: x\n    account: '111122223333'\n",
		"bad account":     "keys:\n  - id: a\n    secret: 12345678\n    account: '42'\n",
		"duplicate":       "keys:\n  - {id: a, secret: '12345678', account: '111122223333'}\n  - {id: a, secret: '12345678', account: '111122223333'}\n",
		"action no colon": "keys:\n  - id: a\n    secret: 12345678\n    account: '111122223333'\n    allow: [{actions: [CreateMesh], resources: ['*']}]\n",
		"no resources":    "keys:\n  - id: a\n    secret: 12345678\n    account: '111122223333'\n    allow: [{actions: ['appmesh:*']}]\n",
		"not yaml":        "keys: [",
	} {
		if _, err := ParseKeys([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// JSON is YAML too.
	ks, err := ParseKeys([]byte(`{"keys":[{"id":"j","secret":"12345678","account":"111122223333","allow":[{"actions":["appmesh:*"],"resources":["*"]}]}]}`))
	if err != nil || ks.Lookup("j") == nil {
		t.Fatalf("json: %v", err)
	}
}

func TestParseAuthorization(t *testing.T) {
	a, err := ParseAuthorization("AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/appmesh/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID != "AKID" || a.Date != "20261202" || a.Region != "us-east-1" || a.Service != "appmesh" || strings.Join(a.SignedHeaders, ";") != "host;x-amz-date" {
		t.Fatalf("%+v", a)
	}
	for _, bad := range []string{
		"",
		"AWS4-HMAC-SHA1 Credential=a/20261202/r/s/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=a/20261202/r/s/aws4_request, SignedHeaders=host",
		"AWS4-HMAC-SHA256 Credential=a/2026120/r/s/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=a/20261202/r/s/aws4_request, SignedHeaders=x-amz-date;host, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=a/20261202/r/s/aws4_request, SignedHeaders=Host, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=a/20261202/r/s/aws4_request, SignedHeaders=host, Signature=zz",
	} {
		_, err := ParseAuthorization(bad)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeIncomplete {
			t.Errorf("%q: %v, want %s", bad, err, CodeIncomplete)
		}
	}
}

// FuzzParseAuthorization: any header parses or fails with an
// IncompleteSignatureException, never panics, and what parses is
// well-formed.
func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/appmesh/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + strings.Repeat("0f", 32))
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/servicediscovery/aws4_request,SignedHeaders=content-type;host;x-amz-date;x-amz-target,Signature=" + strings.Repeat("a", 64))
	f.Add("AWS4-HMAC-SHA256 Credential=, SignedHeaders=, Signature=")
	f.Add("Bearer weft1.abc.def")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := ParseAuthorization(h)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeIncomplete || len(e.Message) > 2048 {
				t.Fatalf("error %v", err)
			}
			return
		}
		if a.KeyID == "" || len(a.Signature) != 64 || len(a.SignedHeaders) == 0 || strings.Contains(a.KeyID, "/") {
			t.Fatalf("parsed %+v", a)
		}
	})
}

func TestReload(t *testing.T) {
	path := t.TempDir() + "/keys.yaml"
	write := func(s string) { // as editors and config tools should: a new file renamed over the old
		t.Helper()
		if err := os.WriteFile(path+".new", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	write("keys:\n  - {id: one, secret: '12345678', account: '111122223333'}\n")
	f, err := LoadKeyFile(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	changed := f.Changed()
	write("keys: [")
	if changed, err := f.Reload(); err == nil || changed {
		t.Fatalf("bad file: changed=%t err=%v", changed, err)
	}
	if f.Keys().Lookup("one") == nil {
		t.Fatal("the last good version was dropped")
	}
	select {
	case <-changed:
		t.Fatal("Changed closed by a rejected version")
	default:
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	go f.Watch(ctx, 10*time.Millisecond) // ends with cancel
	write("keys:\n  - {id: two, secret: '12345678', account: '111122223333'}\n")
	select {
	case <-f.Reloaded():
	case <-ctx.Done():
		t.Fatal("no reload within 30 s")
	}
	if f.Keys().Lookup("two") == nil || f.Keys().Lookup("one") != nil {
		t.Fatal("reloaded keys are not the file's")
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by the new version")
	}
	select {
	case <-f.Changed():
		t.Fatal("the channel after the change is closed already")
	default:
	}
}

// BenchmarkVerifyHTTP is the server's cost of one SigV4 verification of
// a Describe-sized request.
func BenchmarkVerifyHTTP(b *testing.B) {
	now := time.Now()
	v := testVerifier(b, now)
	r := signedRequest(b, "AKIDADMIN", "admin-secret", now, "", nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyHTTP(r, nil); err != nil {
			b.Fatal(err)
		}
	}
}
