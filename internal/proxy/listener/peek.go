package listener

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// peekedConn replays bytes read during inspection before reading on.
type peekedConn struct {
	net.Conn
	pre *bytes.Reader // what inspection read, not yet replayed
	r   io.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// Buffered is how many bytes inspection read that are still to be
// replayed: until none are, the socket's readiness does not tell whether
// there is something to read (the HTTP server parks an idle connection
// only then).
func (p *peekedConn) Buffered() int { return p.pre.Len() }

// NetConn returns the connection under the replayed bytes.
func (p *peekedConn) NetConn() net.Conn { return p.Conn }

// CloseWrite half-closes the underlying TCP connection (for tcp_proxy).
func (p *peekedConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// recorder is a read-only view of a connection that keeps what was read.
type recorder struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.buf.Write(b[:n])
	return n, err
}

func (r *recorder) Write(b []byte) (int, error) { return 0, errors.New("inspection is read-only") }

var errGotHello = errors.New("got client hello")

// inspectTLS reads the start of a connection to learn whether it is TLS
// and its SNI, as Envoy's tls_inspector does, within timeout. It returns
// a connection that replays what was read. timedOut reports a client that
// sent nothing in time.
func inspectTLS(c net.Conn, timeout time.Duration) (out net.Conn, isTLS bool, sni string, timedOut bool) {
	rec := &recorder{Conn: c}
	if timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
	}
	first := make([]byte, 1)
	n, err := io.ReadFull(rec, first)
	if n == 1 && first[0] == 0x16 { // TLS handshake record
		isTLS = true
		// crypto/tls parses the ClientHello; the callback stops the
		// handshake before anything is written.
		srv := tls.Server(&prefixed{recorder: rec, pre: first}, &tls.Config{
			GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				sni = lowerSNI(h.ServerName)
				return nil, errGotHello
			},
		})
		_ = srv.Handshake() // always fails: errGotHello or a malformed hello
	}
	var ne net.Error
	timedOut = n == 0 && errors.As(err, &ne) && ne.Timeout()
	_ = c.SetReadDeadline(time.Time{})
	pre := bytes.NewReader(rec.buf.Bytes())
	return &peekedConn{Conn: c, pre: pre, r: io.MultiReader(pre, c)}, isTLS, sni, timedOut
}

// prefixed hands crypto/tls the byte already read, then the recorder.
type prefixed struct {
	*recorder
	pre []byte
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.recorder.Read(b)
}
