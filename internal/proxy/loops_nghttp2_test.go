package proxy

import (
	"context"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2CLoopsNghttp2: nghttp2's client (nghttp; nghttp2 is the HTTP/2
// library Envoy was built on) through the loops' h2c listener, to an
// upstream that also lowered its HPACK table. A decoder whose table limit
// went down waits for a table size update at the start of the next block
// (RFC 7541 4.2), and nghttp2 refuses a block without it; with its table
// at 4,096 it resolves the loops' dynamic table indexes. Several requests
// share one connection, so blocks after the first, which use the table, are
// checked too. The upstream (x/net) lowers its table to 1 byte and holds
// that limit from the connection's start: the loops' encoder adds nothing to
// its table before the upstream's SETTINGS.
func TestH2CLoopsNghttp2(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	bin, err := exec.LookPath("nghttp")
	if err != nil {
		t.Fatal("nghttp is not installed: apt-get install nghttp2-client (scripts/test.sh does)")
	}
	up, _ := xnetH2CUpstreamWith(t, &http2.Server{MaxDecoderHeaderTableSize: 1}, http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Path", r.URL.Path)
			_, _ = w.Write([]byte("ok\n"))
		}))
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))), edsCluster("h2", h2Upstream), cla("h2", up))
	base := "http://" + h.addr("egress")
	for _, size := range []string{"0", "100", "4096"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "-n", "-v", "-t", "20", "--header-table-size="+size,
			base+"/a", base+"/b", base+"/c").CombinedOutput()
		cancel()
		s := string(out)
		if err != nil || strings.Count(s, ":status: 200") != 3 || strings.Count(s, "x-path: /") != 3 ||
			strings.Contains(s, "COMPRESSION_ERROR") {
			t.Fatalf("nghttp --header-table-size=%s: %v\n%s", size, err, s)
		}
	}
	if n := h.stat("http.egress.downstream_rq_2xx"); n != 9 {
		t.Errorf("downstream_rq_2xx = %d, want 9", n)
	}
}
