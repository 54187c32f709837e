package tlsctx

import (
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"syscall"

	"github.com/weftmesh/weft/internal/proxy/route"
)

// HandshakeError is a client handshake that failed (Client.Handshake),
// with the transport failure reason Envoy 1.34 gives its upstream
// connection for it (route.TransportFailure, for route.ConnectFailed).
type HandshakeError struct {
	Err    error
	reason string
}

func (e *HandshakeError) Error() string { return "tls handshake: " + e.Err.Error() }

func (e *HandshakeError) Unwrap() error { return e.Err }

// TransportFailure is Envoy's transport failure reason for the failure;
// "" when Envoy has none.
func (e *HandshakeError) TransportFailure() string { return e.reason }

// errNotReady: a secret the context names has not arrived (material).
var errNotReady = errors.New("secret not ready")

// verifyFailed is a peer certificate that failed the context's checks
// (verifier): its chain, its SANs, or none sent.
type verifyFailed struct{ err error }

func (e verifyFailed) Error() string { return e.err.Error() }
func (e verifyFailed) Unwrap() error { return e.err }

// BoringSSL's packed error codes, as SslSocket::drainErrorQueue writes
// them: ERR_PACK(library, reason), library in the top byte.
const (
	errLibSys = 2 << 24  // ERR_LIB_SYS: reason is the errno
	errLibSSL = 16 << 24 // ERR_LIB_SSL
	// SSL_R_CERTIFICATE_VERIFY_FAILED and SSL_R_WRONG_VERSION_NUMBER.
	sslCertificateVerifyFailed = 125
	sslWrongVersionNumber      = 247
	// SSL_AD_REASON_OFFSET: a fatal alert the peer sent is reason 1000
	// plus its code.
	sslAlertOffset = 1000
)

// handshakeFailure is Envoy 1.34's transport failure reason for a client
// handshake that failed with err. Envoy's SSL socket sets it when the
// handshake fails (SslHandshakerImpl::doHandshake calls
// SslSocket::onFailure, drainErrorQueue): "TLS_error:", then for each of
// BoringSSL's queued errors "|" code ":" ERR_lib_error_string ":"
// ERR_func_error_string (always "OPENSSL_internal") ":"
// ERR_reason_error_string, then ":TLS_error_end". Weft proxy's handshake
// is Go's, so it words the errors BoringSSL would have queued for the
// same failure where that is known:
//
//   - a peer certificate the context refuses (untrusted, without a SAN
//     it asks for, or none): CERTIFICATE_VERIFY_FAILED, whatever the
//     cause, as Envoy's verify callback fails the handshake alike
//     (ContextImpl::customVerifyCallback; the cause is in the ssl.*
//     counters; detail after the reason came in 1.37);
//   - a fatal alert the server sent (a client certificate it refused, no
//     common ALPN protocol or version): its SSLV3_ALERT_* or
//     TLSV1_ALERT_* reason;
//   - a record that is not TLS (a plaintext server): WRONG_VERSION_NUMBER;
//   - a socket error (a reset): the system library's, the errno's
//     strerror(3) as its reason;
//   - the connection closed mid-handshake: none (BoringSSL reports an
//     EOF as SSL_ERROR_SYSCALL with nothing queued);
//   - a secret that has not arrived: "TLS error: Secret is not supplied
//     by SDS" (NotReadySslSocket::failureReason).
//
// Any other failure (one Go's handshake finds where BoringSSL's would
// queue an error weft cannot name) has no reason, as an EOF.
func handshakeFailure(err error) string {
	var opErr *net.OpError
	switch {
	case errors.Is(err, errNotReady):
		return "TLS error: Secret is not supplied by SDS"
	case errors.As(err, new(verifyFailed)):
		return tlsError(errLibSSL+sslCertificateVerifyFailed, "SSL routines", "CERTIFICATE_VERIFY_FAILED")
	case errors.As(err, new(tls.RecordHeaderError)):
		return tlsError(errLibSSL+sslWrongVersionNumber, "SSL routines", "WRONG_VERSION_NUMBER")
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// crypto/tls's received alert is unexported; its text is
		// tls.AlertError's for the same code.
		for code := range 256 {
			if tls.AlertError(code).Error() == opErr.Err.Error() {
				if name := alertReason(uint8(code)); name != "" {
					return tlsError(errLibSSL+sslAlertOffset+code, "SSL routines", name)
				}
				return ""
			}
		}
		return ""
	}
	if errno, ok := errors.AsType[syscall.Errno](err); ok {
		return tlsError(errLibSys+int(errno), "system library", route.Strerror(errno))
	}
	return ""
}

func tlsError(code int, lib, reason string) string {
	return "TLS_error:|" + strconv.Itoa(code) + ":" + lib + ":OPENSSL_internal:" + reason + ":TLS_error_end"
}

// alertReason is BoringSSL's reason name for an alert a peer sent
// (SSL_R_SSLV3_ALERT_* and SSL_R_TLSV1_ALERT_* in ssl.h); "" for a code
// it has none for.
func alertReason(code uint8) string {
	switch code {
	case 0:
		return "SSLV3_ALERT_CLOSE_NOTIFY"
	case 10:
		return "SSLV3_ALERT_UNEXPECTED_MESSAGE"
	case 20:
		return "SSLV3_ALERT_BAD_RECORD_MAC"
	case 21:
		return "TLSV1_ALERT_DECRYPTION_FAILED"
	case 22:
		return "TLSV1_ALERT_RECORD_OVERFLOW"
	case 30:
		return "SSLV3_ALERT_DECOMPRESSION_FAILURE"
	case 40:
		return "SSLV3_ALERT_HANDSHAKE_FAILURE"
	case 41:
		return "SSLV3_ALERT_NO_CERTIFICATE"
	case 42:
		return "SSLV3_ALERT_BAD_CERTIFICATE"
	case 43:
		return "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"
	case 44:
		return "SSLV3_ALERT_CERTIFICATE_REVOKED"
	case 45:
		return "SSLV3_ALERT_CERTIFICATE_EXPIRED"
	case 46:
		return "SSLV3_ALERT_CERTIFICATE_UNKNOWN"
	case 47:
		return "SSLV3_ALERT_ILLEGAL_PARAMETER"
	case 48:
		return "TLSV1_ALERT_UNKNOWN_CA"
	case 49:
		return "TLSV1_ALERT_ACCESS_DENIED"
	case 50:
		return "TLSV1_ALERT_DECODE_ERROR"
	case 51:
		return "TLSV1_ALERT_DECRYPT_ERROR"
	case 60:
		return "TLSV1_ALERT_EXPORT_RESTRICTION"
	case 70:
		return "TLSV1_ALERT_PROTOCOL_VERSION"
	case 71:
		return "TLSV1_ALERT_INSUFFICIENT_SECURITY"
	case 80:
		return "TLSV1_ALERT_INTERNAL_ERROR"
	case 86:
		return "TLSV1_ALERT_INAPPROPRIATE_FALLBACK"
	case 90:
		return "TLSV1_ALERT_USER_CANCELLED"
	case 100:
		return "TLSV1_ALERT_NO_RENEGOTIATION"
	case 110:
		return "TLSV1_ALERT_UNSUPPORTED_EXTENSION"
	case 111:
		return "TLSV1_ALERT_CERTIFICATE_UNOBTAINABLE"
	case 112:
		return "TLSV1_ALERT_UNRECOGNIZED_NAME"
	case 113:
		return "TLSV1_ALERT_BAD_CERTIFICATE_STATUS_RESPONSE"
	case 114:
		return "TLSV1_ALERT_BAD_CERTIFICATE_HASH_VALUE"
	case 115:
		return "TLSV1_ALERT_UNKNOWN_PSK_IDENTITY"
	case 116:
		return "TLSV1_ALERT_CERTIFICATE_REQUIRED"
	case 120:
		return "TLSV1_ALERT_NO_APPLICATION_PROTOCOL"
	case 121:
		return "TLSV1_ALERT_ECH_REQUIRED"
	}
	return ""
}
