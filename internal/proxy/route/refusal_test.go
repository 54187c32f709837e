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
