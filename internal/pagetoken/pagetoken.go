// Package pagetoken makes the next-page token of a listing that walks the
// store's keys under one prefix, and checks a token a client sends back:
// the App Mesh and Cloud Map List operations page this way.
//
// A token names the last key of the page it ends, bound to the listing's
// prefix by a checksum: a client cannot turn it into a key outside the
// listing, and a token of another listing (another prefix), an edited one
// or garbage is refused. The checksum is not a secret (anyone can compute
// it), so a client that builds a token itself can choose where in its own
// listing the next page starts, which it could read anyway; what matters
// is that the token is a position and nothing else.
package pagetoken

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// sumLen is how many bytes of the checksum a token carries.
const sumLen = 8

// sum binds a position to a listing's prefix.
func sum(prefix, name string) []byte {
	h := sha256.New()
	h.Write([]byte(prefix))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum(nil)[:sumLen]
}

// Make returns the token of a page of the listing under prefix whose last
// key is key. key must be prefix followed by one segment (no '/').
func Make(prefix, key string) string {
	name := strings.TrimPrefix(key, prefix)
	return base64.RawURLEncoding.EncodeToString(append(sum(prefix, name), name...))
}

// After returns the key after which the next page of the listing under
// prefix starts, from a token Make returned for the same prefix. ok is
// false for anything else.
func After(prefix, token string) (key string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	// Only Make's own spelling of those bytes: the decoder skips '\r'
	// and '\n' anywhere (even in Strict mode) and, unless Strict, ignores
	// the unused bits of the last character, so other tokens decode to
	// the same position.
	if err != nil || len(b) <= sumLen || base64.RawURLEncoding.EncodeToString(b) != token {
		return "", false
	}
	name := string(b[sumLen:])
	if strings.Contains(name, "/") || string(b[:sumLen]) != string(sum(prefix, name)) {
		return "", false
	}
	return prefix + name, true
}
