package server

import (
	"context"
	"encoding/hex"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/weftmesh/weft/internal/otlptest"
)

// TestAPIWriteTrace runs weft server with an OTLP endpoint: a write
// through the AWS SDK is one trace, the request with its validation and
// store commit as children; a read is not traced.
func TestAPIWriteTrace(t *testing.T) {
	col := otlptest.Start(t)
	cfg := Config{APIAddr: freeAddr(t), DataDir: t.TempDir(), Region: "us-east-1", AccountID: "111122223333",
		OTLPEndpoint: "http://" + col.Addr}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }() // ends with cancel below
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	base := "http://" + cfg.APIAddr
	waitHealthy(t, base)
	client := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	if _, err := client.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("traced")}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: aws.String("traced")}); err != nil {
		t.Fatal(err)
	}

	byName := map[string]*tracepb.Span{}
	spans := col.WaitSpans(t, 20*time.Second, func(spans []*tracepb.Span) bool {
		for _, s := range spans {
			byName[s.GetName()] = s
		}
		return len(byName) >= 3 // the request, validate and store commit
	})
	root := byName["appmesh.CreateMesh"]
	if root == nil {
		t.Fatalf("no request span; got %v", byName)
	}
	if len(root.GetParentSpanId()) != 0 || root.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("request span: parent %x, kind %v; want a server root", root.GetParentSpanId(), root.GetKind())
	}
	for _, name := range []string{"validate", "store commit"} {
		s := byName[name]
		if s == nil {
			t.Fatalf("no %q span; got %v", name, byName)
		}
		if hex.EncodeToString(s.GetTraceId()) != hex.EncodeToString(root.GetTraceId()) || hex.EncodeToString(s.GetParentSpanId()) != hex.EncodeToString(root.GetSpanId()) {
			t.Errorf("%q: trace %x parent %x; want trace %x parent %x", name, s.GetTraceId(), s.GetParentSpanId(), root.GetTraceId(), root.GetSpanId())
		}
	}
	for _, s := range spans {
		if s.GetName() == "appmesh.DescribeMesh" {
			t.Errorf("a read was traced: %v", s)
		}
	}
	if len(byName) != 3 {
		t.Errorf("spans: %v; want three", byName)
	}
}

func waitHealthy(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("API not up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
