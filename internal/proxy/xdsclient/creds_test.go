package xdsclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	tf := TokenFile{Path: path}
	if _, err := tf.GetRequestMetadata(t.Context()); err == nil {
		t.Fatal("a missing file gave metadata")
	}
	for _, c := range []struct{ content, want string }{
		{"first.token.x\n", "Bearer first.token.x"},
		{"renewed.token.y", "Bearer renewed.token.y"}, // read again at each stream
	} {
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		md, err := tf.GetRequestMetadata(t.Context())
		if err != nil || md["authorization"] != c.want {
			t.Fatalf("%q: %v %v", c.content, md, err)
		}
	}
	for _, bad := range []string{"", "two tokens", strings.Repeat("x", 5000)} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := tf.GetRequestMetadata(t.Context()); err == nil {
			t.Errorf("%.20q accepted", bad)
		}
	}
}

func TestTLSOptions(t *testing.T) {
	if _, err := TLSOptions(filepath.Join(t.TempDir(), "none.pem"), "", ""); err == nil {
		t.Error("a missing CA file was accepted")
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	if _, err := TLSOptions(notPEM, "", ""); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
	if _, err := TLSOptions("", "cert.pem", ""); err == nil {
		t.Error("a certificate without a key was accepted")
	}
	if opts, err := TLSOptions("", "", ""); err != nil || len(opts) != 1 {
		t.Errorf("system roots: %v", err)
	}
}
