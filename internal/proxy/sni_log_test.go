package proxy

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestRequestedServerNameLoggedSanitized: through a TLS listener,
// %REQUESTED_SERVER_NAME% logs a ClientHello's SNI with a byte other than
// a letter, digit, '.', '-' or '_' as "invalid:" and the name with those
// bytes made '_', as Envoy 1.34 (StringUtil::sanitizeInvalidHostname); a
// valid one as sent. crypto/tls sends the names below; weft logged them
// as sent. (Over TLS, a logged listener is the goroutine path's.)
func TestRequestedServerNameLoggedSanitized(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQUESTED_SERVER_NAME%\n"}}
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	logFile := filepath.Join(t.TempDir(), "access.log")
	l := httpListener("ingress", httpManager("ingress", "rds", withAccessLog(logFile, format)))
	l.FilterChains[0].TransportSocket = tlsSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)})
	h.push(l, routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	// The Kelvin sign (3 bytes) and a byte that is no UTF-8: Envoy
	// lowers ASCII letters only (ConnectionSocketImpl::setRequestedServerName,
	// absl::AsciiStrToLower), so each of their bytes is logged '_'.
	names := []string{"svc.local", "my_svc.local", "a b.local", "x\"y.local", "q!%*.local", "\u212aX.local", "\xffY.local"}
	for _, sni := range names {
		cfg := &tls.Config{ServerName: sni, InsecureSkipVerify: true}
		if code, _, err := tlsGet(h.addr("ingress"), cfg); err != nil || code != 200 {
			t.Fatalf("SNI %q: %d %v", sni, code, err)
		}
	}
	got := awaitLog(t, logFile, len(names))
	want := sortLines(strings.Join([]string{"svc.local", "my_svc.local", "invalid:a_b.local", "invalid:x_y.local", "invalid:q___.local", "invalid:___x.local", "invalid:_y.local"}, "\n") + "\n")
	if got != want {
		t.Errorf("access log\n%s\nwant\n%s", got, want)
	}
}
