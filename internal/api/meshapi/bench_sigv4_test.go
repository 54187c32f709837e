package meshapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/auth"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// BenchmarkAPISigV4: Describe and durable Create with SigV4 verification
// off and on, in the same run. Clients sign every request in both modes
// (as the SDKs do), so the difference is the server's verification and
// authorization alone. Results in docs/bench/api.md.
func BenchmarkAPISigV4(b *testing.B) {
	for _, verify := range []bool{false, true} {
		mode := "sigv4=off"
		if verify {
			mode = "sigv4=on"
		}
		b.Run("Describe/"+mode, func(b *testing.B) {
			s := newSignedBenchServer(b, verify)
			s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
			s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", nodeBody(b, "blue"))
			run(b, func(int64) { s.do(b, "GET", "/v20190125/meshes/bench/virtualNodes/blue", nil) })
		})
		b.Run("Create/"+mode, func(b *testing.B) {
			s := newSignedBenchServer(b, verify)
			s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
			body := append([]byte(`{"clientToken":"token-NAME",`), nodeBody(b, "NAME")[1:]...)
			run(b, func(i int64) {
				name := fmt.Sprintf("n%09d", i)
				s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", bytes.ReplaceAll(body, []byte("NAME"), []byte(name)))
			})
		})
	}
}

type signedBenchServer struct {
	url    string
	client *http.Client
	signer *v4.Signer
}

const benchKeys = `
keys:
  - id: AKIDBENCH
    secret: bench-secret
    account: "111122223333"
    allow:
      - actions: ["appmesh:Describe*", "appmesh:Create*"]
        resources: ["arn:aws:appmesh:us-east-1:111122223333:mesh/bench", "arn:aws:appmesh:us-east-1:111122223333:mesh/bench/*"]
`

func newSignedBenchServer(b *testing.B, verify bool) *signedBenchServer {
	b.Helper()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	limits := appmesh.DefaultLimits()
	limits.VirtualNodesPerMesh = 0
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mh := meshapi.New(ops.New(st, ops.Config{Region: "us-east-1", Limits: &limits}, log), meshapi.Config{DefaultAccount: "111122223333", Region: "us-east-1"}, log)
	h := &api.Handler{AppMesh: mh}
	if verify {
		ks, err := auth.ParseKeys([]byte(benchKeys))
		if err != nil {
			b.Fatal(err)
		}
		v := &auth.Verifier{Keys: auth.StaticKeys(ks), Services: []string{"appmesh"}}
		h.Guard = &api.Guard{Verify: v.VerifyHTTP, AppMesh: mh.Action, MaxBodyBytes: 1 << 20}
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients}
	b.Cleanup(tr.CloseIdleConnections)
	return &signedBenchServer{url: srv.URL, client: &http.Client{Transport: tr}, signer: v4.NewSigner()}
}

func (s *signedBenchServer) do(b *testing.B, method, path string, body []byte) {
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: "AKIDBENCH", SecretAccessKey: "bench-secret"}
	if err := s.signer.SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "appmesh", "us-east-1", time.Now()); err != nil {
		b.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("%s %s: %d", method, path, resp.StatusCode)
	}
}
