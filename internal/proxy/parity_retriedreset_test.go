package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// retriedPrefix begins the body of the local reply to an upstream reset
// of a request that was retried (route.RetriedBody).
const retriedPrefix = "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: "

// TestRetriedResetBodySamePaths: the local reply to an upstream reset
// before the response head says "retried and the latest reset reason:"
// where it says "reset reason:" once the request was retried, on every
// path, for an HTTP/1.1 client and an h2c one, as Envoy 1.34's router
// words it (Filter::onUpstreamReset, is_retry_, which Filter::doRetry
// sets): a refused connect retried twice under retry_on connect-failure
// (App Mesh's default HTTP retry policy has it), to an HTTP/1.1 cluster
// and an HTTP/2 one; under retry_on reset, a connection closed before the
// response (connection termination), an HTTP/2 RST_STREAM (remote reset)
// and a malformed response head (protocol error, 502). The same failures
// without a retry policy keep the first form. Neither the details nor
// the flags change (the details have no such words); the log's attempt
// count says the retries. Until round 31 every path wrote the first form
// whether or not it retried.
func TestRetriedResetBodySamePaths(t *testing.T) {
	dead := deadAddr(t)
	closing := tcpUpstream(t, func(c net.Conn) { // the request read, the connection closed
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = http.ReadRequest(bufio.NewReader(c))
	})
	malformed := rawHTTP1Upstream(t, "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")
	h2reset := rawH2Upstream(t, func(w *rawH2Writer, id uint32, _ *rawH2Request) {
		_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
	})
	const refused = "remote connection failure, transport failure reason: delayed connect error: Connection refused"
	refusedDetails := "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
	cases := []struct {
		name, addr string
		h2         bool   // an HTTP/2 cluster
		retryOn    string // "": no retry policy
		status     string
		why        string // the reset reason as the body words it
		log        string // flags and details
	}{
		{"refused", dead, false, "", "503", refused, "UF " + refusedDetails},
		{"refused-retried", dead, false, "connect-failure", "503", refused, "UF,URX " + refusedDetails},
		{"h2-refused-retried", dead, true, "connect-failure", "503", refused, "UF,URX " + refusedDetails},
		{"closing", closing, false, "", "503", "connection termination",
			"UC upstream_reset_before_response_started{connection_termination}"},
		{"closing-retried", closing, false, "reset", "503", "connection termination",
			"UC,URX upstream_reset_before_response_started{connection_termination}"},
		{"h2-reset-retried", h2reset, true, "reset", "503", "remote reset",
			"UR,URX upstream_reset_before_response_started{remote_reset}"},
		{"malformed-retried", malformed, false, "reset", "502", "protocol error",
			"URX,UPE upstream_reset_before_response_started{protocol_error}"},
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%PROTOCOL% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			var routes []*routev3.Route
			var res []types.Resource
			for _, c := range cases {
				r := routeTo("/"+c.name+"/", c.name) // "/refused/" does not take "/refused-retried/"
				if c.retryOn != "" {
					r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: c.retryOn, NumRetries: u32(2),
						RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
				}
				routes = append(routes, r)
				var mods []func(*clusterv3.Cluster)
				if c.h2 {
					mods = append(mods, h2Upstream)
				}
				res = append(res, edsCluster(c.name, mods...), cla(c.name, c.addr))
			}
			h, logFile := loggedEgress(t, p, format, append(res, routeConfig("rds", vhost("v", []string{"*"}, routes...)))...)
			answers := map[string]string{}
			var wantLog []string
			eachClient(t, func(client string, cl *http.Client) {
				for _, c := range cases {
					key := client + " /" + c.name + "/"
					want, attempts := c.status+" "+resetPrefix+c.why, 1
					if c.retryOn != "" {
						want, attempts = c.status+" "+retriedPrefix+c.why, 3
					}
					checkAnswer(t, answers, key, getAnswer(t, cl, "http://"+h.addr("egress")+"/"+c.name+"/"), want)
					wantLog = append(wantLog, fmt.Sprintf("%s %s %s %d", key, c.status, c.log, attempts))
				}
			})
			results[p.name] = pathResult{answers: answers, log: awaitWantLog(t, logFile, wantLog)}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
