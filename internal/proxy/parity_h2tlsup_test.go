package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestUpstreamH2HandshakeSamePaths: an HTTP/2 cluster over mutual TLS
// (App Mesh's http2 or grpc backend with a client policy) whose
// handshake fails, the server's certificate chaining to a CA the cluster
// does not trust or lacking the SAN it asks for, answers an HTTP/1.1
// client and an h2c one the same on every path: 503 UF, "remote
// connection failure" and BoringSSL's CERTIFICATE_VERIFY_FAILED, details
// upstream_reset_before_response_started{remote_connection_failure|
// TLS_error:...} (TestConnectFailureReasonSamePaths), counted in
// upstream_cx_connect_fail and the
// cluster's ssl.fail_verify_error or ssl.fail_verify_san, as Envoy's
// pool counts a connection its TLS socket closed before it was up; a
// cluster whose handshake passes answers 200 from the upstream, which saw
// the proxy's client certificate. On the loops nothing is handed off:
// they handed an HTTP/1.1 request to an HTTP/2 cluster over TLS to the
// goroutine path.
func TestUpstreamH2HandshakeSamePaths(t *testing.T) {
	ca, other := tlstest.NewCA(t, "mesh"), tlstest.NewCA(t, "other")
	app, proxySAN := "spiffe://weft.local/mesh/m/virtualNode/app", "spiffe://weft.local/mesh/m/virtualNode/proxy"
	up, _ := xnetH2TLSUpstream(t, ca, app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		san := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			san = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		fmt.Fprintf(w, "%s alpn=%s client=%s", r.Proto, r.TLS.NegotiatedProtocol, san)
	}))
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, proxySAN))
	untrusting := client // the proxy's certificate, another CA's trust
	untrusting.ca = tlstest.Write(t, t.TempDir(), "ca.pem", other.PEM)
	clusters := []struct {
		name   string
		files  tlsFiles
		san    string
		answer string // past the status
		failed string // the ssl counter the failure counts in
	}{
		{"good", client, app, "200 HTTP/2.0 alpn=h2 client=" + proxySAN, ""},
		{"wrong-san", client, "spiffe://weft.local/mesh/m/virtualNode/elsewhere", "503 " + verifyFailedBody, "fail_verify_san"},
		{"untrusted", untrusting, app, "503 " + verifyFailedBody, "fail_verify_error"},
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER% %BYTES_SENT%\n"}}
	// Not the connections the good cluster made: one on the goroutine
	// path, one per loop its clients' connections reached on the loops
	// (TestEvloopHTTP1ToH2Upstream counts a loop's pooled one).
	names := []string{"upstream_cx_connect_fail", "upstream_rq_total", "upstream_rq_200", "upstream_rq_503",
		"ssl.fail_verify_san", "ssl.fail_verify_error", "ssl.connection_error"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			var routes []*routev3.Route
			var res []types.Resource
			for _, c := range clusters {
				routes = append(routes, routeTo("/"+c.name, c.name))
				res = append(res, edsCluster(c.name, h2Upstream, upstreamTLS(c.files, "app.local", c.san)), cla(c.name, up))
			}
			h, logFile := loggedEgress(t, p, format, append(res, routeConfig("rds", vhost("v", []string{"*"}, routes...)))...)
			answers := map[string]string{}
			want := map[string]int64{}
			var wantLog []string
			eachClient(t, func(client string, cl *http.Client) {
				for _, c := range clusters {
					key := client + " /" + c.name
					a := getAnswer(t, cl, "http://"+h.addr("egress")+"/"+c.name)
					checkAnswer(t, answers, key, a, c.answer)
					_, body, _ := strings.Cut(a, " ") // %BYTES_SENT% counts its bytes
					line := fmt.Sprintf("%s 200 - via_upstream %s %d", key, c.name, len(body))
					if c.failed != "" {
						line = fmt.Sprintf("%s 503 UF %s %s %d", key, verifyFailedDetails, c.name, len(body))
						want["cluster."+c.name+".ssl."+c.failed]++
						want["cluster."+c.name+".upstream_cx_connect_fail"]++
						want["cluster."+c.name+".upstream_cx_total"]++ // a new connect for each
					}
					wantLog = append(wantLog, line)
				}
			})
			waitStats(t, h, want)
			log := awaitWantLog(t, logFile, wantLog)
			var stats []string
			for _, c := range clusters {
				stats = append(stats, c.name+":\n"+h.counts("cluster."+c.name+".", names))
			}
			if l := h.listener("egress"); !p.goroutines && !p.h2Goroutines && (l.HandedOff() != 0 || l.LoopH2UpstreamStreams() != int64(len(wantLog))) {
				t.Errorf("%d connections handed off, %d streams to HTTP/2 upstreams on the loops; want 0, %d",
					l.HandedOff(), l.LoopH2UpstreamStreams(), len(wantLog))
			}
			results[p.name] = pathResult{answers: answers, stats: strings.Join(stats, "\n"), log: log}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
