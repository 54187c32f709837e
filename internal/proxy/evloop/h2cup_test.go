package evloop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestParseH2CUpgradeAgreesWithStripH2C: the loops' parser takes a head
// as an h2c upgrade exactly when proxyroute.StripH2C takes the request
// net/http reads from it (the goroutine path's rule), and then shows the
// router (headView) the header StripH2C leaves, Connection's kept tokens
// joined included, and forwards none of the h2c headers; it refuses the
// head for its Connection header, hands it off as an upgrade, or serves
// it, where the goroutine path's check of the stripped header would.
func TestParseH2CUpgradeAgreesWithStripH2C(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: x\r\n"
	hops := func(n int) string {
		var ts []string
		for i := range n {
			ts = append(ts, fmt.Sprintf("X-Hop-%d", i))
		}
		return strings.Join(ts, ", ")
	}
	for _, tc := range []struct {
		name, head string
		h2c        bool
		err        error // the parser's
	}{
		{"curl", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n", true, nil},
		{"keep-alive", "Connection: keep-alive, Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n", true, nil},
		{"case, blanks, two lines", "Connection: upgrade , ,x-a\r\nConnection: HTTP2-SETTINGS, close\r\nupgrade: H2C\r\nX-A: 1\r\n", true, nil},
		{"an empty Upgrade line", "Connection: Upgrade\r\nUpgrade:\r\nUpgrade: h2c\r\n", true, nil},
		{"no HTTP2-Settings", "Connection: Upgrade\r\nUpgrade: h2c\r\nX-B: 2\r\n", true, nil},
		{"nine kept of eleven", "Connection: " + hops(9) + ", Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: A\r\n", true, nil},
		{"ten kept", "Connection: " + hops(10) + ", Upgrade\r\nUpgrade: h2c\r\n", true, errConnection},
		{"X-Forwarded-For kept", "Connection: Upgrade, X-Forwarded-For\r\nUpgrade: h2c\r\n", true, errConnection},
		{"h2c, websocket", "Connection: Upgrade\r\nUpgrade: h2c, websocket\r\n", false, errUpgrade},
		{"h2c twice", "Connection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: h2c\r\n", false, errUpgrade},
		{"h2", "Connection: Upgrade\r\nUpgrade: h2\r\n", false, errUpgrade},
		{"no upgrade token", "Connection: HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n", false, errUpgrade},
		{"websocket", "Connection: Upgrade\r\nUpgrade: websocket\r\n", false, errUpgrade},
		{"ordinary", "Connection: keep-alive, X-A\r\nX-A: 1\r\nHTTP2-Settings: AAMAAABk\r\n", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(get + tc.head + "\r\n")
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
			if err != nil {
				t.Fatal(err)
			}
			if got := proxyroute.StripH2C(req.Header); got != tc.h2c {
				t.Fatalf("StripH2C: %v, want %v", got, tc.h2c)
			}
			var r request
			err = parseRequest(in, &r, false, proxyroute.MaxHeaders, false)
			if !errors.Is(err, tc.err) || (err == nil && r.h2c != tc.h2c) {
				t.Fatalf("parseRequest: %v, h2c %v; want %v, %v", err, r.h2c, tc.err, tc.h2c)
			}
			if err != nil {
				return
			}
			hv := headView{in, &r, "http"}
			seen := http.Header{}
			for i := range hv.NumHeaders() {
				if n, v := hv.Header(i); n != nil && !strings.EqualFold(string(n), "host") {
					k := textproto.CanonicalMIMEHeaderKey(string(n))
					seen[k] = append(seen[k], string(v))
				}
			}
			if got, want := fmt.Sprint(sorted(seen)), fmt.Sprint(sorted(req.Header)); got != want {
				t.Errorf("the router sees %s; the goroutine path %s", got, want)
			}
			for _, h := range r.lines {
				n := h.name.of(in)
				if tc.h2c && !h.hop && (proxyroute.EqualFoldASCII(n, "upgrade") || proxyroute.EqualFoldASCII(n, "http2-settings")) {
					t.Errorf("%s is forwarded", n)
				}
			}
		})
	}
}

// sorted is h's lines, sorted.
func sorted(h http.Header) []string {
	var l []string
	for k, vv := range h {
		for _, v := range vv {
			l = append(l, k+": "+v)
		}
	}
	slices.Sort(l)
	return l
}

// TestParseH2CUpgradeAllocatesNothing: an h2c upgrade's head is parsed
// without allocating once its request has held one (the kept Connection
// tokens are joined into a buffer the request keeps).
func TestParseH2CUpgradeAllocatesNothing(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade, HTTP2-Settings, X-A\r\nUpgrade: h2c\r\n" +
		"HTTP2-Settings: AAMAAABk\r\nX-A: 1\r\n\r\n")
	req := request{lines: make([]headerLine, 0, 16)}
	var err error
	allocs := testing.AllocsPerRun(100, func() {
		err = parseRequest(in, &req, false, proxyroute.MaxHeaders, false)
	})
	if err != nil || !req.h2c || string(req.h2cConn) != "keep-alive,X-A" || allocs != 0 {
		t.Fatalf("err %v, h2c %v, connection %q; %v allocations per head", err, req.h2c, req.h2cConn, allocs)
	}
}
