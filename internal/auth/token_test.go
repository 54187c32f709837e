package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	tk := NewTokens([]byte("0123456789abcdef0123456789abcdef"))
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	arn := "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/a"
	tok, err := tk.Mint(arn, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Check(tok, now.Add(59*time.Minute)); err != nil || got != arn {
		t.Fatalf("check: %q %v", got, err)
	}
	if _, err := tk.Check(tok, now.Add(time.Hour)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	other := NewTokens([]byte("another key, another server......"))
	if _, err := other.Check(tok, now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("another server's key: %v", err)
	}
	parts := strings.Split(tok, ".")
	forge := func(header, claims string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + "." + parts[2]
	}
	for name, bad := range map[string]string{
		"other resource": forge(`{"alg":"HS256","typ":"JWT"}`, `{"iss":"weft","sub":"arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/b","exp":9999999999}`),
		"alg none":       forge(`{"alg":"none","typ":"JWT"}`, `{"iss":"weft","sub":"`+arn+`","exp":9999999999}`),
		"no signature":   parts[0] + "." + parts[1] + ".",
		"four parts":     tok + ".x",
		"huge":           tok + strings.Repeat("A", 5000),
		"empty":          "",
	} {
		if _, err := tk.Check(bad, now); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseResource(t *testing.T) {
	for in, want := range map[string]string{
		"mesh/m/virtualNode/a":                                        "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/a",
		"mesh/m@444455556666/virtualGateway/g":                        "arn:aws:appmesh:us-east-1:444455556666:mesh/m/virtualGateway/g",
		"arn:aws:appmesh:eu-west-1:444455556666:mesh/m/virtualNode/a": "arn:aws:appmesh:eu-west-1:444455556666:mesh/m/virtualNode/a",
	} {
		if got, err := ParseResource(in, "us-east-1", "111122223333"); err != nil || got != want {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "mesh/m", "mesh/m/virtualRouter/r", "arn:aws:appmesh:us-east-1:1:mesh/m", "mesh//virtualNode/a"} {
		if _, err := ParseResource(bad, "us-east-1", "111122223333"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
