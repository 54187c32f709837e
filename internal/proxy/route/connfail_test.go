package route

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

// handshakeErr is an error that knows its transport failure reason, as
// tlsctx.HandshakeError does.
type handshakeErr struct {
	err    error
	reason string
}

func (e handshakeErr) Error() string            { return "tls handshake: " + e.err.Error() }
func (e handshakeErr) Unwrap() error            { return e.err }
func (e handshakeErr) TransportFailure() string { return e.reason }

// TestConnectFailed: the reply and details of each failed connect, worded
// as Envoy 1.34 words them: the errno as ClientConnectionImpl does
// (strerror, "immediate" for what Linux refuses at connect(2), "delayed"
// for what comes back from the network), as Go's dialer wraps it; a
// handshake's own reason before the errno it wraps; a timeout without a
// reason; an error nobody can word with none.
func TestConnectFailed(t *testing.T) {
	dialErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	const reset = "upstream connect error or disconnect/reset before headers. reset reason: "
	for _, c := range []struct {
		name          string
		err           error
		timedOut      bool
		body, details string
	}{
		{"refused", dialErr(syscall.ECONNREFUSED), false,
			reset + "remote connection failure, transport failure reason: delayed connect error: Connection refused",
			"upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"},
		{"host unreachable", dialErr(syscall.EHOSTUNREACH), false,
			reset + "remote connection failure, transport failure reason: delayed connect error: No route to host",
			"upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_No_route_to_host}"},
		{"network unreachable", fmt.Errorf("connect 10.0.0.1:80: %w", syscall.ENETUNREACH), false,
			reset + "remote connection failure, transport failure reason: immediate connect error: Network is unreachable",
			"upstream_reset_before_response_started{remote_connection_failure|immediate_connect_error:_Network_is_unreachable}"},
		{"handshake reset", handshakeErr{dialErr(syscall.ECONNRESET), "TLS_error:|33554536:system library:OPENSSL_internal:Connection reset by peer:TLS_error_end"}, false,
			reset + "remote connection failure, transport failure reason: TLS_error:|33554536:system library:OPENSSL_internal:Connection reset by peer:TLS_error_end",
			"upstream_reset_before_response_started{remote_connection_failure|TLS_error:|33554536:system_library:OPENSSL_internal:Connection_reset_by_peer:TLS_error_end}"},
		{"handshake EOF", handshakeErr{errors.New("EOF"), ""}, false,
			reset + "remote connection failure", "upstream_reset_before_response_started{remote_connection_failure}"},
		// Out of descriptors: Go's dialer and the loops' dial report the
		// socket(2) that failed; Envoy's ClientConnectionImpl closes as
		// LocalClose with its "socket creation failure".
		{"socket", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}, false,
			reset + "local connection failure, transport failure reason: socket creation failure",
			"upstream_reset_before_response_started{local_connection_failure|socket_creation_failure}"},
		{"timeout", dialErr(syscall.ETIMEDOUT), true,
			reset + "connection timeout", "upstream_reset_before_response_started{connection_timeout}"},
		{"unknown", errors.New("something else"), false,
			reset + "remote connection failure", "upstream_reset_before_response_started{remote_connection_failure}"},
	} {
		f := ConnectFailed(c.err, c.timedOut)
		if got := f.Body(); got != c.body {
			t.Errorf("%s: body %q, want %q", c.name, got, c.body)
		}
		if got := f.Details(false); got != c.details {
			t.Errorf("%s: details %q, want %q", c.name, got, c.details)
		}
	}
}
