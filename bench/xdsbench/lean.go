package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// The lean client (-client lean) is a simulated proxy that speaks ADS
// over an HTTP/2 connection of its own, framed with x/net/http2's Framer,
// without grpc-go: one goroutine per proxy reads a frame, and answers a
// whole DiscoveryResponse with its ACK in one write. It does the work an
// Envoy's xDS client does per push (read, decode the response, encode
// and send the ACK) without grpc-go's client machinery, whose cost per
// push (31-54 µs in rounds 12-13) is as large as the server's and, on
// this machine's two shared cores, is counted in every write's time; a
// real proxy spends it on its own host. The server sees the same
// protocol: HTTP/2, gRPC's length-prefixed messages, trailers at the end.
//
// Its limits: one ADS stream per connection (-streams-per-conn 1); the
// windows it grants the server are large and fixed (leanWindow), as
// weft proxy's client keeps fixed windows, and are topped up once half
// is used; a request that would pass the window the server grants it
// fails the client (ACKs are a few hundred bytes against 64 KiB granted
// and replenished as the server reads, so it does not happen in a run).

// leanWindow is the stream and connection window the lean client grants
// the server: weft proxy's client's (internal/proxy/xdsclient, 16 MiB).
const leanWindow = 16 << 20

// adsPath is the ADS method's HTTP/2 path.
const adsPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

// leanConn is one lean client's connection and its single stream (id 1).
type leanConn struct {
	conn net.Conn
	w    *bufio.Writer
	fr   *http2.Framer
	// What the server lets the client send: the connection's window, the
	// stream's, and the initial stream window its settings last gave.
	sendConn, sendStream, peerInitial int64
	// received counts the DATA bytes read since the last WINDOW_UPDATE.
	received int64
	pending  []byte // gRPC message bytes read and not yet a whole message
	buf      []byte // an encoded request, reused
}

// startLean dials addr (over TLS when cfg is not nil), opens the ADS
// stream, sends the first requests and starts the goroutine that reads
// the stream, ACKs and reports to events.
func (c *client) startLean(ctx context.Context, addr string, cfg *tls.Config, nodeID string) (*leanConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if cfg != nil {
		// As grpc-go's TLS credentials: the server's name from the
		// address, and HTTP/2 by ALPN (grpc-go's server refuses a
		// client that offers no "h2").
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				conn.Close()
				return nil, err
			}
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"h2"}
		tc := tls.Client(conn, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
		scheme = "https"
	}
	lc := &leanConn{conn: conn, w: bufio.NewWriterSize(conn, 16<<10), sendConn: 65535, sendStream: 65535, peerInitial: 65535}
	lc.fr = http2.NewFramer(lc.w, bufio.NewReaderSize(conn, 32<<10))
	lc.fr.SetReuseFrames()
	lc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := lc.open(scheme, addr); err != nil {
		conn.Close()
		return nil, err
	}
	c.send = lc.send
	if err := c.subscribe(nodeID); err != nil {
		conn.Close()
		return nil, err
	}
	go func() { // ends when the connection does (the fleet's close, or the server)
		defer conn.Close()
		lc.read(c)
	}()
	return lc, nil
}

// open writes the connection preface, the client's settings and window,
// and the stream's request headers.
func (lc *leanConn) open(scheme, authority string) error {
	if _, err := lc.w.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	if err := lc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: leanWindow}); err != nil {
		return err
	}
	if err := lc.fr.WriteWindowUpdate(0, leanWindow-65535); err != nil {
		return err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", scheme}, {":path", adsPath}, {":authority", authority},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	if err := lc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	return lc.w.Flush()
}

// send writes one request as a gRPC message in a DATA frame, and flushes.
func (lc *leanConn) send(r *discovery.DiscoveryRequest) error {
	b, err := proto.MarshalOptions{}.MarshalAppend(append(lc.buf[:0], 0, 0, 0, 0, 0), r)
	if err != nil {
		return err
	}
	lc.buf = b
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	if n := int64(len(b)); n > lc.sendConn || n > lc.sendStream {
		return fmt.Errorf("lean client: a %d-byte request passes the server's windows (connection %d, stream %d)", n, lc.sendConn, lc.sendStream)
	}
	lc.sendConn -= int64(len(b))
	lc.sendStream -= int64(len(b))
	if err := lc.fr.WriteData(1, false, b); err != nil {
		return err
	}
	return lc.w.Flush()
}

// read handles the connection's frames until it ends: settings and
// pings acknowledged, windows counted, each whole gRPC message handed
// to c (which ACKs it through send).
func (lc *leanConn) read(c *client) {
	for {
		f, err := lc.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			if f.StreamID != 1 {
				continue
			}
			if err := lc.data(c, f.Data()); err != nil {
				return
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				f.ForeachSetting(func(s http2.Setting) error {
					if s.ID == http2.SettingInitialWindowSize {
						lc.sendStream += int64(s.Val) - lc.peerInitial
						lc.peerInitial = int64(s.Val)
					}
					return nil
				})
				if lc.fr.WriteSettingsAck() != nil || lc.w.Flush() != nil {
					return
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() && (lc.fr.WritePing(true, f.Data) != nil || lc.w.Flush() != nil) {
				return
			}
		case *http2.WindowUpdateFrame:
			switch f.StreamID {
			case 0:
				lc.sendConn += int64(f.Increment)
			case 1:
				lc.sendStream += int64(f.Increment)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				return // the trailers: the stream is over
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return
		}
	}
}

// data takes a DATA frame's payload: every whole gRPC message in what has
// come so far is decoded and handled; the window is topped up once half
// of it is used.
func (lc *leanConn) data(c *client, p []byte) error {
	lc.received += int64(len(p))
	lc.pending = append(lc.pending, p...)
	for len(lc.pending) >= 5 {
		if lc.pending[0] != 0 {
			return errors.New("lean client: a compressed message")
		}
		n := int(binary.BigEndian.Uint32(lc.pending[1:5]))
		if len(lc.pending) < 5+n {
			break
		}
		var r discovery.DiscoveryResponse
		if err := proto.Unmarshal(lc.pending[5:5+n], &r); err != nil {
			return err
		}
		lc.pending = lc.pending[:copy(lc.pending, lc.pending[5+n:])]
		if err := c.handle(&r); err != nil {
			return err
		}
	}
	if lc.received >= leanWindow/2 {
		if err := lc.fr.WriteWindowUpdate(0, uint32(lc.received)); err != nil {
			return err
		}
		if err := lc.fr.WriteWindowUpdate(1, uint32(lc.received)); err != nil {
			return err
		}
		lc.received = 0
		return lc.w.Flush()
	}
	return nil
}
