package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestStreamTimeoutBeforeHeadSamePaths: a stream idle timeout and a max
// stream duration that end a stream before its response head, once its
// request was received whole and the upstream stays silent, answer 504,
// as Envoy's connection manager answers then
// (maybeRequestTimeoutCode(remoteDecodeComplete()) in onIdleTimeout and
// onStreamMaxDurationReached; 408 only while the request is still
// arriving, route.TestStreamTimeoutReply); to a gRPC request 200 with the
// gRPC status Envoy's local reply carries: the idle timeout's 504 mapped
// (httpToGrpcStatus: UNAVAILABLE), the max stream duration
// DEADLINE_EXCEEDED. Over HTTP/1.1 the 504 keeps the connection open.
// Requests with a body and without, over HTTP/1.1 and HTTP/2 clients, on
// every path (both timeouts hand the listener's connections to the
// goroutine path on the loops: httpconn.HCM.LoopReady). Every path
// answered 408, and UNKNOWN to gRPC.
func TestStreamTimeoutBeforeHeadSamePaths(t *testing.T) {
	up := h1h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done() // silent until the proxy gives the request up
	}))
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(httpListener("idle", httpManager("idle", "rds", func(m *hcmv3.HttpConnectionManager) {
				m.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
			})),
				httpListener("duration", httpManager("duration", "rds", func(m *hcmv3.HttpConnectionManager) {
					m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxStreamDuration: durationpb.New(300 * time.Millisecond)}
				})),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "up"))),
				edsCluster("up"), cla("up", up))
			h1 := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(h1.CloseIdleConnections)
			clients := map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2": h2cClient(t)}
			for _, c := range []struct {
				listener   string
				method     string
				grpc       bool
				status     int
				grpcStatus string
			}{
				{"idle", "GET", false, 504, ""},
				{"idle", "POST", false, 504, ""},
				{"idle", "POST", true, 200, "14"},
				{"duration", "GET", false, 504, ""},
				{"duration", "POST", false, 504, ""},
				{"duration", "POST", true, 200, "4"},
			} {
				for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
					got := timeoutAnswer(t, clients[proto], h.addr(c.listener), c.method, c.grpc)
					want := timeoutReply{c.status, c.grpcStatus, false}
					if got != want {
						t.Errorf("%s %s to %s (gRPC %v): answered %+v, want %+v", proto, c.method, c.listener, c.grpc, got, want)
					}
				}
			}
		})
	}
}

// timeoutReply is how the proxy answered a request a timeout ended.
type timeoutReply struct {
	status int
	grpc   string // grpc-status of a gRPC request's answer (its status then 200)
	close  bool   // over HTTP/1.1: the answer closes the connection
}

// timeoutAnswer sends a request to addr with c, a POST with a 3-byte
// body, as a gRPC request or not, and returns the answer.
func timeoutAnswer(t *testing.T, c *http.Client, addr, method string, grpc bool) (got timeoutReply) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if method == "POST" {
		body = bytes.NewReader([]byte("abc"))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/x", body)
	if err != nil {
		t.Fatal(err)
	}
	if grpc {
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s (gRPC %v): %v", method, grpc, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return timeoutReply{resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Close}
}
