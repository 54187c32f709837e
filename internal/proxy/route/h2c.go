package route

import (
	"net/http"
	"strings"
)

// An HTTP/1.1 request asking to upgrade to h2c (RFC 7540 section 3.2:
// "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", an
// HTTP2-Settings header; what curl --http2 and Java's HttpClient send over
// plaintext) is not upgraded by Envoy: its HTTP/1 codec removes the h2c
// headers when it has read the head and serves the rest as an ordinary
// HTTP/1.1 request (ConnectionImpl::onHeadersCompleteImpl in
// source/common/http/http1/codec_impl.cc; envoyproxy/envoy issue 7161).
// It does so when Utility::isUpgrade holds (an Upgrade header and a
// Connection header with the upgrade token) and the Upgrade header's
// value, its lines joined by commas, is "h2c", case aside: it removes the
// Upgrade header, the upgrade and http2-settings tokens of Connection
// (and Connection when no token is left) and every HTTP2-Settings header.
// That happens before the codec sanitizes the Connection header
// (ServerConnectionImpl::onHeadersCompleteBase), which then applies to the
// tokens left, and before the connection manager sees the request, which
// it counts, routes and logs as any other. Both request paths, the
// goroutine path (StripH2C) and the event loops (AddUpgrade,
// H2CDropsToken), apply this rule.

// H2C is what a request's Upgrade lines ask for, as far as Envoy's h2c
// rule goes (AddUpgrade). The zero H2C is no Upgrade line with a value.
type H2C uint8

const (
	// H2CNone: no Upgrade line, or only empty ones.
	H2CNone H2C = iota
	// H2CAlone: the Upgrade lines' values, joined, are "h2c".
	H2CAlone
	// H2COther: anything else ("websocket", "h2c, websocket", two
	// "h2c" lines): an upgrade like any other.
	H2COther
)

// AddUpgrade returns u with one more Upgrade line's value v (without the
// blanks around it). Envoy's header map joins a header's lines by
// commas, skipping empty values (HeaderMapImpl::appendToHeader), so the
// joined value is "h2c" when exactly one line has a value and it is h2c.
func AddUpgrade[T ~string | ~[]byte](u H2C, v T) H2C {
	switch {
	case len(v) == 0:
		return u
	case u == H2CNone && EqualFoldASCII(v, "h2c"):
		return H2CAlone
	}
	return H2COther
}

// H2CDropsToken reports whether Envoy's codec removes tok, as
// CutConnectionToken cut it, from the Connection header of an h2c
// upgrade request: upgrade and http2-settings, case aside, and blank
// tokens (StringUtil::removeTokens skips them; the other tokens are
// joined by commas without blanks).
func H2CDropsToken[T ~string | ~[]byte](tok T) bool {
	return len(tok) == 0 || EqualFoldASCII(tok, "upgrade") || EqualFoldASCII(tok, "http2-settings")
}

// StripH2C removes an h2c upgrade's headers from a request's header h
// (canonical keys, as net/http reads them), as Envoy's codec does, and
// reports whether it did: when h is an h2c upgrade request, Upgrade and
// HTTP2-Settings go, and Connection becomes its other tokens joined by
// commas, or goes when none is left. Otherwise h is left as it is.
func StripH2C(h http.Header) bool {
	u := H2CNone
	for _, v := range h["Upgrade"] {
		u = AddUpgrade(u, v)
	}
	if u != H2CAlone {
		return false
	}
	upgrade, kept := false, 0
	for _, v := range h["Connection"] {
		for tok, rest, ok := CutConnectionToken(v); ok; tok, rest, ok = CutConnectionToken(rest) {
			upgrade = upgrade || ConnectionToken(tok) == ConnUpgrade
			if !H2CDropsToken(tok) {
				kept++
			}
		}
	}
	if !upgrade {
		return false
	}
	delete(h, "Upgrade")
	delete(h, "Http2-Settings")
	if kept == 0 {
		delete(h, "Connection")
		return true
	}
	var b strings.Builder
	for _, v := range h["Connection"] {
		for tok, rest, ok := CutConnectionToken(v); ok; tok, rest, ok = CutConnectionToken(rest) {
			if H2CDropsToken(tok) {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(tok)
		}
	}
	h["Connection"] = []string{b.String()}
	return true
}
