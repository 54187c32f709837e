package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestFastSignatureEqualsSDK: over requests of many forms, signed by the
// SDK as a client signs them, the fast path either declines or computes
// exactly the signature the SDK signer (the reference, sign) computes, and
// it does not decline the forms the AWS CLI and SDKs send to weft.
func TestFastSignatureEqualsSDK(t *testing.T) {
	key := &Key{ID: "AKIDFAST", Secret: "fast-secret"}
	at := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	urls := []struct {
		url        string
		wantFast   bool // the common form: the fast path must take it
		methodBody bool
	}{
		{"http://127.0.0.1:9080/v20190125/meshes/color-mesh", true, false},
		{"http://127.0.0.1:9080/v20190125/meshes/color-mesh/virtualNodes", true, true},
		{"http://weft.example:9080/v20190125/meshes/m_1.x~y/virtualRouters/r-1/routes", true, true},
		{"http://127.0.0.1:9080/", true, true},
		{"http://127.0.0.1:9080/v20190125/meshes/a%3Ab", false, false},
		{"http://127.0.0.1:9080/v20190125/meshes/a b", false, false},
		{"http://127.0.0.1:9080/v20190125/meshes?limit=10&nextToken=x", false, false},
		{"http://127.0.0.1:80/v20190125/meshes/m", false, false},
		{"https://127.0.0.1:443/v20190125/meshes/m", false, false},
		{"http://127.0.0.1:9080/v20190125/meshes/%7Eweird", false, false},
	}
	edits := []struct {
		name string
		edit func(r *http.Request)
	}{
		{"plain", func(r *http.Request) {}},
		{"json", func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }},
		{"target", func(r *http.Request) {
			r.Header.Set("X-Amz-Target", "Route53AutoNaming_v20170314.ListNamespaces")
			r.Header.Set("Content-Type", "application/x-amz-json-1.1")
		}},
		{"spaces", func(r *http.Request) { r.Header.Set("X-Weft-Note", "  a  b ") }},
		{"two values", func(r *http.Request) { r.Header.Add("X-Weft-Note", "a"); r.Header.Add("X-Weft-Note", " b ") }},
		{"ignored", func(r *http.Request) { r.Header.Set("User-Agent", "aws-cli/2.9.19") }},
		{"unsigned payload", func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", UnsignedPayload) }},
	}
	fast := 0
	for _, u := range urls {
		for _, method := range []string{"GET", "PUT", "POST", "DELETE"} {
			for _, e := range edits {
				for _, token := range []string{"", "session-token"} {
					body := ""
					if u.methodBody && method != "GET" {
						body = `{"meshName":"m"}`
					}
					name := fmt.Sprintf("%s %s %s token=%v", method, u.url, e.name, token != "")
					r, err := http.NewRequest(method, u.url, strings.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					e.edit(r)
					sum := sha256.Sum256([]byte(body))
					hash := hex.EncodeToString(sum[:])
					if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" {
						hash = h
					}
					creds := aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret, SessionToken: token}
					if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hash, "appmesh", "us-east-1", at); err != nil {
						t.Fatal(err)
					}
					in := receive(t, r)
					a, err := ParseAuthorization(in.Header.Get("Authorization"))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					s := signedHTTP(in, len(body), hash)
					ref, err := sign(context.Background(), v4.NewSigner(func(o *v4.SignerOptions) { o.DisableHeaderHoisting = true }), key, a, at, s)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					var c signingKeys
					got, ok := c.fastSignature(key, a, at, s)
					switch {
					case ok && got != ref.Signature:
						t.Errorf("%s: fast signature %s, the SDK's %s", name, got, ref.Signature)
					case ok && got != a.Signature:
						t.Errorf("%s: fast signature %s, the client's %s", name, got, a.Signature)
					case !ok && u.wantFast && e.name != "spaces":
						t.Errorf("%s: the fast path declined a common request", name)
					}
					if ok {
						fast++
					}
				}
			}
		}
	}
	t.Logf("%d requests took the fast path", fast)
}

// receive is r as the server reads it off the wire.
func receive(t *testing.T, r *http.Request) *http.Request {
	t.Helper()
	in, err := http.ReadRequest(bufioFromRequest(t, r))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// BenchmarkVerifyCommon is one verification of a request of the form the
// CLI and SDKs send (a Describe: no query, a plain path), which takes the
// fast path; BenchmarkVerifyHTTP's request (an escaped path and a query)
// takes the SDK signer's.
func BenchmarkVerifyCommon(b *testing.B) {
	now := time.Now()
	v := testVerifier(b, now)
	r, err := http.NewRequest("GET", "http://127.0.0.1:9080/v20190125/meshes/bench/virtualNodes/blue", nil)
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	creds := aws.Credentials{AccessKeyID: "AKIDADMIN", SecretAccessKey: "admin-secret"}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), "appmesh", "us-east-1", now); err != nil {
		b.Fatal(err)
	}
	in, err := http.ReadRequest(bufioFromRequest(b, r))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyHTTP(in, nil); err != nil {
			b.Fatal(err)
		}
	}
}
