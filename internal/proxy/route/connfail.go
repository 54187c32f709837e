package route

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// ConnectFailure is why an upstream connection failed before it was up
// (its connect or its TLS handshake), as the local reply to its request
// and the access log say it, one rule for every request path, flagged UF
// either way. Envoy 1.34's pool reports such a connection by the event
// that closed it (ConnPoolImplBase::onConnectionEvent: its connect timer
// Timeout, a RemoteClose RemoteConnectionFailure, a LocalClose
// LocalConnectionFailure) with the connection's transport failure reason
// (ClientConnectionImpl's failure_reason_, else its transport socket's);
// UpstreamRequest::onPoolFailure maps the three to the stream reset
// reasons ConnectionTimeout, RemoteConnectionFailure and
// LocalConnectionFailure (since 1.27: changelog 1.27.0, connection pool,
// "Increase granularity mapping connection pool failures"; before, all
// three were ConnectionFailure), stores the reason for
// %UPSTREAM_TRANSPORT_FAILURE_REASON%, and the router's
// Filter::onUpstreamReset words the reply (Body, Details). A refused or
// unreachable connect closes as RemoteClose
// (ClientConnectionImpl::onWriteEvent's SO_ERROR, or the immediate error
// of its connect), so does a failed TLS handshake (the SSL socket's
// doRead or doWrite returns Close, which ConnectionImpl closes as
// RemoteClose): a remote connection failure. Envoy's LocalClose before
// the connection is up is its own doing: a socket it could not create
// (ClientConnectionImpl's "socket creation failure": the descriptors ran
// out), which both request paths meet alike (socketFailed), or one it
// could not bind to a source address, which weft does not configure.
type ConnectFailure struct {
	// Timeout: the cluster's connect_timeout ended the connect or the
	// handshake (the pool's connect timer, which runs until the
	// handshake is done); Envoy has no transport failure reason then.
	Timeout bool
	// Local: the connection's socket could not be created, a local
	// connection failure (socketFailed).
	Local bool
	// Transport is the transport failure reason as Envoy words it, ""
	// when it has none (ConnectFailed).
	Transport string
}

// TransportFailure is implemented by an error that knows Envoy's
// transport failure reason for itself ("" when Envoy has none): a failed
// TLS handshake (tlsctx).
type TransportFailure interface {
	error
	TransportFailure() string
}

// ConnectFailed is the ConnectFailure of a connect or TLS handshake that
// failed with err; timedOut: the cluster's connect_timeout ended it. The
// transport failure reason is a TransportFailure's, else the connect's
// errno worded as Envoy's ClientConnectionImpl words it (connectErrno),
// else none; a socket(2) that failed is a local connection failure
// (socketFailed).
func ConnectFailed(err error, timedOut bool) ConnectFailure {
	if timedOut {
		return ConnectFailure{Timeout: true}
	}
	if tf, ok := errors.AsType[TransportFailure](err); ok {
		return ConnectFailure{Transport: tf.TransportFailure()}
	}
	if socketFailed(err) {
		return ConnectFailure{Local: true, Transport: "socket creation failure"}
	}
	if errno, ok := errors.AsType[syscall.Errno](err); ok {
		return ConnectFailure{Transport: connectErrno(errno)}
	}
	return ConnectFailure{}
}

// Why is the reset reason as the body words it
// (Http::Utility::resetReasonToString).
func (f ConnectFailure) Why() string {
	switch {
	case f.Timeout:
		return "connection timeout"
	case f.Local:
		return "local connection failure"
	}
	return "remote connection failure"
}

// Body is the local reply's body: Filter::onUpstreamReset appends the
// transport failure reason when there is one (the runtime guard
// http_transport_failure_reason_in_body, on by default since it came,
// was removed with its legacy path in 1.22).
func (f ConnectFailure) Body() string {
	if f.Transport == "" {
		return ResetBody(f.Why())
	}
	return ResetBody(f.Why()) + ", transport failure reason: " + f.Transport
}

// Details is the local reply's %RESPONSE_CODE_DETAILS%:
// upstream_reset_before_response_started{reason|transport failure
// reason} (ResetDetails for started), whitespace made underscores
// (Filter::onUpstreamReset: StringUtil::replaceAllEmptySpace over the
// whole; the "|" is 1.34's, 1.2x wrote ",").
func (f ConnectFailure) Details(started bool) string {
	reason := ResetRemoteConnectionFailure
	switch {
	case f.Timeout:
		reason = ResetConnectionTimeout
	case f.Local:
		reason = ResetLocalConnectionFailure
	}
	if f.Transport != "" {
		reason += "|" + Underscored(f.Transport)
	}
	return ResetDetails(reason, started)
}

// Underscored is s with each whitespace byte an underscore, as Envoy's
// StringUtil::replaceAllEmptySpace makes it (for the details), and as
// its %UPSTREAM_TRANSPORT_FAILURE_REASON% formatter replaces each space.
// The reasons weft proxy words have no whitespace but spaces.
func Underscored(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\v', '\f', '\r':
			return '_'
		}
		return r
	}, s)
}

// socketFailed reports whether err is a socket(2) that failed (the
// process or the system out of descriptors), as Go's dialer and the
// loops' dial report it: an *os.SyscallError of "socket". Envoy's
// ClientConnectionImpl then has no socket to connect; its failure reason
// is "socket creation failure" and it closes the connection as
// LocalClose, which its pool reports as a local connection failure (read
// in Envoy's current source, source/common/network/connection_impl.cc).
func socketFailed(err error) bool {
	se, ok := errors.AsType[*os.SyscallError](err)
	return ok && se.Syscall == "socket"
}

// connectErrno words a failed connect's errno as Envoy 1.34's
// ClientConnectionImpl does: "immediate connect error: " when connect(2)
// itself failed (ClientConnectionImpl::connect), "delayed connect error: "
// when the socket's SO_ERROR said so once it was writable (onWriteEvent),
// then errorDetails(errno), which is strerror(3) ("Connection refused";
// 1.2x wrote the number, "delayed connect error: 111"). Neither request
// path can tell which (Go's dialer returns both alike), so the errno
// does: Linux answers a non-blocking TCP connect at once only for what it
// knows locally (no route to the network, a firewall's refusal, a local
// address, a family or argument it cannot take); a refusal, an
// unreachable host and a timeout come back from the network, after the
// SYN.
func connectErrno(errno syscall.Errno) string {
	prefix := "delayed connect error: "
	switch errno {
	case syscall.ENETUNREACH, syscall.EACCES, syscall.EPERM, syscall.EADDRNOTAVAIL, syscall.EAFNOSUPPORT, syscall.EINVAL:
		prefix = "immediate connect error: "
	}
	return prefix + Strerror(errno)
}

// Strerror is glibc's strerror(3) text for errno, as Envoy's
// errorDetails gives it: Go's text for the errno (glibc's, lower-cased)
// with its first letter upper-cased again.
func Strerror(errno syscall.Errno) string {
	s := errno.Error()
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}
