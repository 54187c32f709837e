package xdstest

import (
	"context"
	"encoding/binary"
	"net"
	"sync"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
)

// Pings counts the HTTP/2 PING frames (not PING ACKs) on the client
// connections dialled with its Dialer: those the client sent and those
// the server sent. Safe for concurrent use.
type Pings struct {
	mu             sync.Mutex // protects the fields below
	conns          int
	sent, received int
}

// Dialer is a dial option that makes each connection through p.
func (p *Pings) Dialer() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.conns++
		p.mu.Unlock()
		return &pingConn{Conn: conn, p: p, out: frameScanner{skip: len(http2.ClientPreface)}}, nil
	})
}

// Count returns the connections dialled, and the PINGs the client sent
// and received on them so far.
func (p *Pings) Count() (conns, sent, received int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns, p.sent, p.received
}

// pingConn scans the bytes each way; Read and Write may run at once
// (gRPC's reader and writer), each owns its own scanner.
type pingConn struct {
	net.Conn
	p       *Pings
	in, out frameScanner
}

func (c *pingConn) Write(b []byte) (int, error) {
	if n := c.out.pings(b); n > 0 {
		c.p.mu.Lock()
		c.p.sent += n
		c.p.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *pingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if k := c.in.pings(b[:n]); k > 0 {
		c.p.mu.Lock()
		c.p.received += k
		c.p.mu.Unlock()
	}
	return n, err
}

// frameScanner follows the frames of one direction of an HTTP/2
// connection, in whatever pieces its bytes come.
type frameScanner struct {
	skip int    // bytes still to skip: the client preface, a frame's payload
	hdr  []byte // a frame header read in part
}

// pings returns the PING frames whose headers end in b.
func (s *frameScanner) pings(b []byte) int {
	n := 0
	for len(b) > 0 {
		if s.skip > 0 {
			k := min(s.skip, len(b))
			s.skip -= k
			b = b[k:]
			continue
		}
		k := min(9-len(s.hdr), len(b))
		s.hdr = append(s.hdr, b[:k]...)
		b = b[k:]
		if len(s.hdr) < 9 {
			break
		}
		length := int(binary.BigEndian.Uint32([]byte{0, s.hdr[0], s.hdr[1], s.hdr[2]}))
		if http2.FrameType(s.hdr[3]) == http2.FramePing && !http2.Flags(s.hdr[4]).Has(http2.FlagPingAck) {
			n++
		}
		s.hdr, s.skip = s.hdr[:0], length
	}
	return n
}
