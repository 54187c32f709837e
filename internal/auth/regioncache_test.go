package auth

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRejectedRegionsKeepNothing: requests naming a known access key ID,
// a region of their own each (64 KiB long) and a wrong signature are
// rejected and leave nothing behind. The SDK signer the verifier kept
// cached a derived key per region for good, and the fast path's cache
// kept each scope whole: a client without the secret could grow the
// server's heap by 148 KB a request.
func TestRejectedRegionsKeepNothing(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var v *Verifier
	do := func(region string) {
		r, _ := http.NewRequest("GET", "http://127.0.0.1:9080/v20190125/meshes", nil)
		r.Header.Set("X-Amz-Date", now.Format("20060102T150405Z"))
		r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDMESHA/"+now.Format("20060102")+"/"+region+"/appmesh/aws4_request, SignedHeaders=host;x-amz-date, Signature="+fmt.Sprintf("%064x", 1))
		_, err := v.VerifyHTTP(r, nil)
		if e, ok := err.(*Error); !ok || e.Code != CodeInvalidSignature {
			t.Fatalf("a wrong signature: %v, want %s", err, CodeInvalidSignature)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, c := range []struct {
		name   string
		n      int
		region func(i int) string
	}{
		{"64 KiB regions", 200, func(i int) string { return fmt.Sprintf("r%d-%s", i, strings.Repeat("x", 64<<10)) }},
		// Short ones fill the caches to their bounds, past them.
		{"short regions", 20000, func(i int) string { return fmt.Sprintf("r%d", i) }},
	} {
		v = testVerifier(t, now)
		do("us-east-1")
		before := heap()
		for i := range c.n {
			do(c.region(i))
		}
		grew := int64(heap()) - int64(before)
		t.Logf("%s: %d rejected requests, heap %+d bytes", c.name, c.n, grew)
		if grew > 2<<20 {
			t.Errorf("%s: the heap grew by %d bytes over %d rejected requests, %d a request", c.name, grew, c.n, grew/int64(c.n))
		}
	}
	runtime.KeepAlive(v)
}

// TestRotatedSecretRejected: once a key file's reload gives a key ID a new
// secret, a request signed with the old one is refused, on the SDK
// signer's path too (this request's query string takes it). The signer
// derived the day's key once per key ID and scope, whatever the secret,
// and went on accepting the old secret until the day's end.
func TestRotatedSecretRejected(t *testing.T) {
	now := time.Date(2026, 12, 2, 11, 30, 0, 0, time.UTC)
	v := testVerifier(t, now)
	body := `{"virtualNodeName":"n","spec":{}}`
	verify := func(secret string) error {
		r := signedRequest(t, "AKIDADMIN", secret, now, body, nil)
		_, err := v.VerifyHTTP(r, []byte(body))
		return err
	}
	if err := verify("admin-secret"); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	if len(v.signers) == 0 {
		t.Fatal("the request was verified on the fast path: this test is of the SDK signer's")
	}
	ks, err := ParseKeys([]byte(strings.Replace(testKeys, "secret: admin-secret", "secret: rotated-secret", 1)))
	if err != nil {
		t.Fatal(err)
	}
	v.Keys.cur.Store(ks) // as a reload does
	if err := verify("admin-secret"); err == nil {
		t.Fatal("the old secret is still accepted after the rotation")
	}
	if err := verify("rotated-secret"); err != nil {
		t.Fatalf("the new secret: %v", err)
	}
}
