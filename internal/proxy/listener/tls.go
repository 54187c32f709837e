package listener

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
)

// TLS terminates TLS on the connections of a filter chain (its
// transport_socket). Handshake returns the decrypted connection; on error
// the caller closes c.
type TLS interface {
	Handshake(ctx context.Context, c net.Conn) (net.Conn, error)
}

// startTLS runs the chain's handshake on c, if it has TLS. false means
// the handshake failed and c is closed: never served in plaintext.
func (l *Listener) startTLS(ctx context.Context, c *Conn) bool {
	if c.Chain.TLS == nil {
		return true
	}
	tc, err := c.Chain.TLS.Handshake(ctx, c.Conn)
	if err != nil {
		l.log.Debug("downstream TLS handshake failed", "src", c.Src.String(), "chain", c.Chain.Name, "err", err)
		_ = c.Close()
		return false
	}
	c.Conn = tc
	if st, ok := tc.(interface{ ConnectionState() tls.ConnectionState }); ok && c.ServerName == "" {
		c.ServerName = strings.ToLower(st.ConnectionState().ServerName)
	}
	return true
}

// Scheme is "https" for a connection served over TLS, else "http" (what
// Envoy puts in X-Forwarded-Proto when the request has none).
func (c *Conn) Scheme() string {
	if c.Chain != nil && c.Chain.TLS != nil {
		return "https"
	}
	return "http"
}
