package evloop

import (
	"testing"
)

// TestLocalReplyShapedByItsRequest: a local reply is shaped by the
// request it answers, and by no earlier one on the connection. A gRPC
// request's (its first Content-Type application/grpc, with a suffix or
// not) is 200 application/grpc with the 404's gRPC code (12,
// UNIMPLEMENTED) in grpc-status and no body, with content-length 0, or
// to a HEAD request none and transfer-encoding: chunked announced (as
// Envoy's HTTP/1.1 encoder frames a HEAD answer without a length); a
// request whose first Content-Type is another is answered 404;
// and a malformed head after a gRPC HEAD request is answered as Envoy's
// codec answers it: 400 text/plain "Bad Request".
func TestLocalReplyShapedByItsRequest(t *testing.T) {
	b := backend(t, "a")
	srv, _ := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/only/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	send := "POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc+proto\r\nContent-Length: 0\r\n\r\n" +
		"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\n\r\n" +
		"HEAD /elsewhere HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc\r\n\r\n" +
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n"
	rs, bodies, _ := rawMethods(t, srv.Addr(), send, []string{"POST", "POST", "HEAD", "GET"})
	for i, want := range []struct {
		status              int
		contentType, length string
		grpcStatus, body    string
		chunked             bool
	}{
		{200, "application/grpc", "0", "12", "", false},
		{404, "", "0", "", "", false},
		{200, "application/grpc", "", "12", "", true},
		{400, "text/plain", "11", "", "Bad Request", false},
	} {
		r := rs[i]
		chunked := len(r.TransferEncoding) == 1 && r.TransferEncoding[0] == "chunked"
		if r.StatusCode != want.status || r.Header.Get("Content-Type") != want.contentType || chunked != want.chunked ||
			r.Header.Get("Content-Length") != want.length || r.Header.Get("Grpc-Status") != want.grpcStatus || bodies[i] != want.body {
			t.Errorf("answer %d: %d %v %q, want %+v", i, r.StatusCode, r.Header, bodies[i], want)
		}
	}
}
