package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The common request's signature, computed here rather than by
// aws-sdk-go-v2's signer, which stays the reference (sign) and handles
// every other request.
//
// Why: the SDK signer costs about 13 µs and 60 allocations per
// verification (it builds an http.Request, header maps, the query and its
// own Authorization, then we parse that back); a whole Describe costs
// about 80 µs of CPU, so SigV4 verification took 24 % off Describe
// throughput (BenchmarkAPISigV4 -cpu 1, 2026-12-02: 11,776-12,824 req/s
// off, 9,348-9,886 on). The goal is under 10 %. This path covers
// what the AWS CLI and SDKs send to weft's APIs (a path of unreserved
// characters, no query, the usual headers) and gives up, leaving the
// request to the SDK signer, on anything else; docs/bench/api.md has the
// figures after it. TestFastSignatureEqualsSDK checks it against the SDK
// signer over generated requests.

// ignoredSigned are the headers the SDK signer never signs; a request
// that lists one is left to it (and fails there).
var ignoredSigned = map[string]bool{"authorization": true, "user-agent": true, "x-amzn-trace-id": true, "expect": true, "transfer-encoding": true}

// signingKeys caches derived signing keys (four HMACs each) by secret,
// date, region and service. Bounded: cleared when it reaches maxKeys.
type signingKeys struct {
	mu   sync.Mutex
	keys map[string][]byte
}

// maxSigningKeys bounds the cache's entries, and maxSigningKeyID the
// length of what identifies one (a key derived for a longer scope, which
// the client chooses, is not kept): 4096 × 256 bytes at most.
const maxSigningKeys, maxSigningKeyID = 4096, 256

func (c *signingKeys) get(secret, date, region, service string) []byte {
	id := secret + "\x00" + date + "\x00" + region + "\x00" + service
	if len(id) > maxSigningKeyID {
		return deriveSigningKey(secret, date, region, service)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.keys[id]; ok {
		return k
	}
	k := deriveSigningKey(secret, date, region, service)
	if c.keys == nil || len(c.keys) >= maxSigningKeys {
		c.keys = make(map[string][]byte)
	}
	c.keys[id] = k
	return k
}

// deriveSigningKey is SigV4's signing key for a credential scope.
func deriveSigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// fastSignature returns the signature the SDK signer would compute for s
// as signed by a with key at t, and true; or false when s is not of the
// common form, and only the SDK signer may say.
func (c *signingKeys) fastSignature(key *Key, a Authorization, t time.Time, s signed) (string, bool) {
	if s.rawQuery != "" || s.rawPath != "" || s.path == "" || !unreservedPath(s.path) {
		return "", false
	}
	if strings.ContainsRune(s.host, ' ') || strings.HasSuffix(s.host, ":80") || strings.HasSuffix(s.host, ":443") {
		return "", false
	}
	if !sort.StringsAreSorted(a.SignedHeaders) || !contains(a.SignedHeaders, "x-amz-date") {
		return "", false
	}
	var b strings.Builder
	b.Grow(256)
	b.WriteString(s.method)
	b.WriteString("\n")
	b.WriteString(s.path)
	b.WriteString("\n\n")
	prev := ""
	for _, name := range a.SignedHeaders {
		if name == prev || name != strings.ToLower(name) || ignoredSigned[name] {
			return "", false
		}
		prev = name
		b.WriteString(name)
		b.WriteByte(':')
		switch name {
		case "host":
			b.WriteString(s.host)
		case "x-amz-date":
			b.WriteString(t.Format(amzDateFormat))
		case "content-length":
			if s.contentLength <= 0 {
				return "", false
			}
			b.WriteString(strconv.FormatInt(s.contentLength, 10))
		default:
			vs := s.header(name)
			if len(vs) == 0 || (name == "x-amz-security-token" && len(vs) > 1) {
				return "", false
			}
			for i, v := range vs {
				if strings.Contains(v, "  ") {
					return "", false
				}
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strings.TrimSpace(v))
			}
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(a.SignedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(s.payloadHash)
	sum := sha256.Sum256([]byte(b.String()))

	scope := a.Date + "/" + a.Region + "/" + a.Service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + t.Format(amzDateFormat) + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	return hex.EncodeToString(hmacSHA256(c.get(key.Secret, a.Date, a.Region, a.Service), toSign)), true
}

// unreservedPath reports whether p has only RFC 3986 unreserved characters
// and slashes, which the SDK signer's path escaping leaves as they are.
func unreservedPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~', c == '/':
		default:
			return false
		}
	}
	return true
}
