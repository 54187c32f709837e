package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/server"
)

// TestTokenCreate: weft token create signs POST /v1/tokens with the
// environment's AWS credentials and prints the token; a key that may not
// create tokens gets the server's AccessDeniedException.
func TestTokenCreate(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	if err := os.WriteFile(keys, []byte(`
keys:
  - {id: AKIDOPS, secret: ops-secret-1, account: "111122223333", allow: [{actions: ["weft:CreateToken"], resources: ["arn:aws:appmesh:*:111122223333:mesh/m/*"]}]}
  - {id: AKIDREAD, secret: read-secret-1, account: "111122223333", allow: [{actions: ["appmesh:Describe*"], resources: ["*"]}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // Run listens itself; a test that races for this port fails loudly
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { // ends with cancel
		done <- server.Run(ctx, server.Config{APIAddr: addr, DataDir: filepath.Join(dir, "data"), Region: "us-east-1", AccountID: "111122223333", AuthFile: keys}, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			r.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("server ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("server not up within 30 s")
		}
	}
	run := func(id, secret string) (string, error) {
		t.Setenv("AWS_ACCESS_KEY_ID", id)
		t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
		var out, errOut bytes.Buffer
		err := runToken(t.Context(), []string{"create", "--resource", "mesh/m/virtualNode/n", "--ttl", "2h", "--endpoint-url", "http://" + addr}, &out, &errOut)
		return out.String(), err
	}
	tok, err := run("AKIDOPS", "ops-secret-1")
	if err != nil || strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q (want a JWT), %v", tok, err)
	}
	if _, err := run("AKIDREAD", "read-secret-1"); err == nil || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Fatalf("a key without weft:CreateToken: %v", err)
	}
}
