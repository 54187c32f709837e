package route

import (
	"strings"
	"testing"
)

// TestConnectionTokens: a Connection value's tokens as Envoy's codec
// takes them (Utility::sanitizeConnectionHeader): the pieces between
// commas that are not empty, trimmed, and what each is.
func TestConnectionTokens(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"close", "close:close"},
		{" Keep-Alive ,, upgrade", "Keep-Alive:keep-alive upgrade:upgrade"},
		{"HTTP2-Settings, connection, X-A", "HTTP2-Settings:skipped connection:skipped X-A:names"},
		{" , te", ":skipped te:names"},
		{"X-Forwarded-For", "X-Forwarded-For:refused"},
		{"x-forwarded-host,x-forwarded-proto, :path", "x-forwarded-host:refused x-forwarded-proto:refused :path:refused"},
		{",,", ""},
	} {
		var got []string
		for tok, rest, ok := CutConnectionToken(tc.in); ok; tok, rest, ok = CutConnectionToken(rest) {
			kind := [...]string{ConnNames: "names", ConnClose: "close", ConnKeepAlive: "keep-alive", ConnUpgrade: "upgrade",
				ConnSkipped: "skipped", ConnRefused: "refused"}[ConnectionToken(tok)]
			got = append(got, tok+":"+kind)
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%q: %s, want %s", tc.in, g, tc.want)
		}
	}
}

// TestTETrailers: a TE value is forwarded as "trailers" when one of its
// members is trailers, and not at all otherwise, as Envoy forwards it.
func TestTETrailers(t *testing.T) {
	for in, want := range map[string]bool{
		"trailers": true, "Trailers": true, "gzip, trailers": true, "trailers ,deflate": true, " trailers\t": true,
		"": false, "gzip": false, "trailers;q=0.5": false, "xtrailers": false, "trailer": false,
	} {
		if got := TETrailers(in); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}

// TestH2List: an HTTP/2 request's list counted as the goroutine path sees
// it (what x/net's server hands it).
func TestH2List(t *testing.T) {
	type field struct{ name, value string }
	for _, tc := range []struct {
		name          string
		tls           bool
		pseudo, regs  []field
		fields, bytes int
	}{
		{"pseudo and a field", false, []field{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}},
			[]field{{"x-a", "1"}}, 5, 7 + 3 + 7 + 4 + 10 + 1 + 5 + 1 + 3 + 1},
		{"https in plaintext counts as http", false, []field{{":method", "GET"}, {":scheme", "https"}},
			nil, 2, 7 + 3 + 7 + 4},
		{"https over TLS", true, []field{{":scheme", "https"}}, nil, 1, 7 + 5},
		{"http over TLS counts as https", true, []field{{":scheme", "http"}}, nil, 1, 7 + 5},
		{"host is the authority", false, []field{{":method", "GET"}}, []field{{"host", "hh"}}, 2, 7 + 3 + 10 + 2},
		{"host beside the authority", false, []field{{":authority", "a"}}, []field{{"host", "a"}}, 1, 10 + 1},
		{"cookie and trailer", false, nil, []field{{"cookie", "a=1"}, {"trailer", "x"}, {"x-a", "1"}}, 1, 4},
		{"expect 100-continue", false, nil, []field{{"expect", "100-continue"}, {"expect", "x"}}, 0, 0},
		{"expect else", false, nil, []field{{"expect", "x"}}, 1, 7},
	} {
		l := NewH2List()
		for _, f := range tc.pseudo {
			l.Pseudo(f.name, f.value, tc.tls)
		}
		for _, f := range tc.regs {
			l.Field(f.name, f.value)
		}
		if fields, bytes := l.Count(); fields != tc.fields || bytes != tc.bytes {
			t.Errorf("%s: %d fields, %d bytes; want %d, %d", tc.name, fields, bytes, tc.fields, tc.bytes)
		}
	}
}

// TestExpectLine: a request's Expect lines ask for 100-continue when
// their value, the lines joined by commas without the empty ones, is
// 100-continue as a whole, case aside, as Envoy's connection manager
// compares it; anything else is another expectation, forwarded.
func TestExpectLine(t *testing.T) {
	names := [...]string{ExpectNothing: "nothing", ExpectContinue: "continue", ExpectOther: "other"}
	for _, tc := range []struct {
		lines []string
		want  Expectation
	}{
		{nil, ExpectNothing},
		{[]string{""}, ExpectNothing},
		{[]string{"100-continue"}, ExpectContinue},
		{[]string{"100-Continue"}, ExpectContinue},
		{[]string{"", "100-continue", ""}, ExpectContinue},
		{[]string{"foo"}, ExpectOther},
		{[]string{"100-continue, foo"}, ExpectOther},
		{[]string{"100-continue,"}, ExpectOther},
		{[]string{"100-continue", "100-continue"}, ExpectOther},
		{[]string{"100-continue", "foo"}, ExpectOther},
		{[]string{"foo", "100-continue"}, ExpectOther},
		{[]string{"100-continuex"}, ExpectOther},
	} {
		e, eb := ExpectNothing, ExpectNothing // the lines as strings, and as bytes
		for _, v := range tc.lines {
			e, eb = ExpectLine(e, v), ExpectLine(eb, []byte(v))
		}
		if e != tc.want || eb != tc.want {
			t.Errorf("%q: %s (as bytes %s), want %s", tc.lines, names[e], names[eb], names[tc.want])
		}
	}
}

// TestConnectionHeaderRefused: Envoy's codec refuses a request for its
// Connection header with more than MaxConnectionTokens tokens, one naming
// a header it will not remove, or TE named with a value of MaxTEBytes or
// more; an upgrade never.
func TestConnectionHeaderRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    ConnectionHeader
		want bool
	}{
		{"none", ConnectionHeader{}, false},
		{"nine tokens", ConnectionHeader{Tokens: 9}, false},
		{"ten tokens", ConnectionHeader{Tokens: 10}, true},
		{"ten tokens, an upgrade", ConnectionHeader{Tokens: 10, Upgrade: true}, false},
		{"x-forwarded-for named", ConnectionHeader{Tokens: 1, NamesRefused: true}, true},
		{"x-forwarded-for named, an upgrade", ConnectionHeader{Tokens: 2, NamesRefused: true, Upgrade: true}, false},
		{"TE named, 255 bytes", ConnectionHeader{Tokens: 1, NamesTE: true, TEBytes: 255}, false},
		{"TE named, 256 bytes", ConnectionHeader{Tokens: 1, NamesTE: true, TEBytes: 256}, true},
		{"TE not named, 256 bytes", ConnectionHeader{Tokens: 1, TEBytes: 256}, false},
		{"TE named, 256 bytes, an upgrade", ConnectionHeader{Tokens: 2, NamesTE: true, TEBytes: 256, Upgrade: true}, false},
	} {
		if got := tc.h.Refused(); got != tc.want {
			t.Errorf("%s: refused %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestJoinedLen: a header's lines joined by commas, as Envoy's header map
// joins them, an empty line adding no comma.
func TestJoinedLen(t *testing.T) {
	for _, c := range []struct {
		lines []string
		want  int
	}{
		{nil, 0},
		{[]string{""}, 0},
		{[]string{"trailers"}, 8},
		{[]string{"trailers", "gzip"}, 13},
		{[]string{"", "trailers", "", "gzip", ""}, 13},
	} {
		n := 0
		for _, l := range c.lines {
			n = JoinedLen(n, len(l))
		}
		if n != c.want {
			t.Errorf("%q: %d, want %d", c.lines, n, c.want)
		}
	}
}
