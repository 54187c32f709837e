package main

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// TestCACommands: weft ca rotates a CA through its HTTP endpoints, one
// step per command, and reports a refused step as an error.
func TestCACommands(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := ca.Open(t.Context(), st, ca.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	api := strings.TrimPrefix(srv.URL, "http://")
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := runCA(t.Context(), append(args[:1:1], append([]string{"--endpoint-url", "http://" + api}, args[1:]...)...), &out, &errOut)
		return out.String(), err
	}
	old := a.State().SignerRoot().Fingerprint()
	out, err := run("status")
	if err != nil || !strings.Contains(out, old) || !strings.Contains(out, "weft.local") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if _, err := run("add-root"); err != nil {
		t.Fatal(err)
	}
	next := a.State().Roots[1].Fingerprint()
	if _, err := run("remove-root", old[:12]); err == nil || !strings.Contains(err.Error(), "activate another root first") {
		t.Fatalf("removing the signer: %v", err)
	}
	if _, err := run("activate", next[:12]); err != nil {
		t.Fatal(err)
	}
	if _, err := run("remove-root", old[:12]); err != nil {
		t.Fatal(err)
	}
	if s := a.State(); len(s.Roots) != 1 || s.SignerRoot().Fingerprint() != next {
		t.Fatal("rotation did not happen")
	}
	if _, err := run("activate"); err == nil {
		t.Fatal("activate without a fingerprint")
	}
	if _, err := run("bogus"); err == nil {
		t.Fatal("unknown command accepted")
	}
}
