package pagetoken

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, key := range []string{"p/a", "p/node-001", "p/%2Fescaped", "p/" + strings.Repeat("x", 300)} {
		tok := Make("p/", key)
		if got, ok := After("p/", tok); !ok || got != key {
			t.Errorf("After(Make(%q)) = %q, %v", key, got, ok)
		}
	}
}

func TestRefused(t *testing.T) {
	good := Make("cloudmap/instance/srv-a/", "cloudmap/instance/srv-a/i1")
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	edited := append([]byte(nil), raw...)
	edited[len(edited)-1] = '2' // i2, the checksum of i1
	slash := append(append([]byte(nil), raw[:sumLen]...), "../x"...)
	tests := []struct{ name, prefix, token string }{
		{"another listing's", "cloudmap/instance/srv-b/", good},
		{"another kind's", "cloudmap/service/", good},
		{"edited", "cloudmap/instance/srv-a/", base64.RawURLEncoding.EncodeToString(edited)},
		{"a bare name, unchecked", "cloudmap/instance/srv-a/", base64.RawURLEncoding.EncodeToString([]byte("i1"))},
		{"the raw key suffix", "cloudmap/instance/srv-a/", "i1"},
		{"not base64", "cloudmap/instance/srv-a/", "!!"},
		{"padded", "cloudmap/instance/srv-a/", good + "="},
		{"a newline inside", "cloudmap/instance/srv-a/", good[:3] + "\n" + good[3:]},
		{"a carriage return inside", "cloudmap/instance/srv-a/", good[:3] + "\r" + good[3:]},
		{"a trailing newline", "cloudmap/instance/srv-a/", good + "\n"},
		{"unused bits set", "cloudmap/instance/srv-a/", withTrailingBits(good)},
		{"checksum only", "cloudmap/instance/srv-a/", base64.RawURLEncoding.EncodeToString(raw[:sumLen])},
		{"empty", "cloudmap/instance/srv-a/", ""},
		{"a slash", "cloudmap/instance/srv-a/", base64.RawURLEncoding.EncodeToString(slash)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if key, ok := After(tt.prefix, tt.token); ok {
				t.Errorf("After(%q, %q) = %q, accepted", tt.prefix, tt.token, key)
			}
		})
	}
}

// withTrailingBits respells tok with the lowest, unused bit of its last
// character flipped, which a lenient decoder reads as the same bytes
// (tok must not encode a multiple of three bytes: then no bit is unused).
func withTrailingBits(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[last^1])
}

// FuzzAfter: whatever a client sends, a token is refused or names one key
// right under the listing's prefix, and only Make's own token for that
// key is accepted.
func FuzzAfter(f *testing.F) {
	f.Add(Make("p/", "p/a"))
	f.Add("!!")
	f.Add("")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("12345678a/b")))
	f.Fuzz(func(t *testing.T, token string) {
		key, ok := After("p/", token)
		if !ok {
			return
		}
		name, found := strings.CutPrefix(key, "p/")
		if !found || name == "" || strings.Contains(name, "/") || Make("p/", key) != token {
			t.Fatalf("After(%q) = %q: not one key under p/ whose token this is", token, key)
		}
	})
}
