package h2ads

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// prefaceTimeout bounds the wait for a new connection's preface and
// first SETTINGS frame.
const prefaceTimeout = 10 * time.Second

// readBuffer is the size of a connection's read buffer.
const readBuffer = 32 << 10

// maxWindow is HTTP/2's largest flow-control window (RFC 9113, 6.9.1).
const maxWindow = 1<<31 - 1

// gRPC status codes the server answers with (google.golang.org/grpc/codes'
// numbers; the package is not imported to keep this transport apart from
// grpc-go's).
const (
	statusOK                = 0
	statusResourceExhausted = 8
	statusUnimplemented     = 12
	statusInternal          = 13
)

// errReset is what Handler.Closed gets for a stream the client reset.
var errReset = errors.New("h2ads: stream reset by the client")

// conn is one HTTP/2 connection. Its reader goroutine (serve) owns the
// read side of fr and the fields marked "reader"; wmu protects every
// write to the socket and the fields below it, which the reader and any
// goroutine calling Stream.Send share.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader // reader
	fr  *http2.Framer

	// reader
	maxStreamID uint32 // the highest stream id the client opened
	recvAvail   int64  // connection window left to the client
	recvUnacked int64  // received, not yet given back by WINDOW_UPDATE

	wmu          sync.Mutex
	streams      map[uint32]*Stream
	henc         *hpack.Encoder
	hbuf         bytes.Buffer
	sendWindow   int64  // the connection's window the client granted
	peerInitial  int64  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32 // the client's SETTINGS_MAX_FRAME_SIZE
	scratch      []byte // one framed gRPC message being written
	werr         error  // the first write error; the connection is closed
}

// Stream is one request stream of a connection.
type Stream struct {
	c  *conn
	id uint32

	// State is the Handler's, set in Open and used in its calls for the
	// stream (all on the connection's reader goroutine); h2ads never
	// reads it.
	State any

	// reader
	rbuf        []byte // request bytes received, not yet a whole message
	recvAvail   int64
	recvUnacked int64

	// protected by c.wmu
	headersSent bool
	closed      bool
	sendWindow  int64
	cur         []byte // a framed response waiting for window, from off
	off         int
	next        []byte // the response after cur, when cur is partly sent
}

// ID is the stream's HTTP/2 stream id.
func (s *Stream) ID() uint32 { return s.id }

func newConn(srv *Server, nc net.Conn) *conn {
	c := &conn{srv: srv, nc: nc, streams: map[uint32]*Stream{},
		recvAvail: 65535, sendWindow: 65535, peerInitial: 65535, peerMaxFrame: 16384}
	// Reads are buffered as grpc-go's (32 KiB): a frame's header and
	// payload in one read. Writes are not: each frame is one write.
	c.br = bufio.NewReaderSize(nc, readBuffer)
	c.fr = http2.NewFramer(nc, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderListSize
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// Send writes one gRPC message, the concatenation of parts, to the
// client. When the flow-control windows cannot take it whole, it is kept
// as the stream's pending response (replacing one kept before and not
// yet begun) and written as WINDOW_UPDATEs come: a stream holds at most
// two responses, whatever the client reads. Send returns after the
// socket write, or ErrClosed (or the write's error) once the stream or
// the connection has ended.
func (s *Stream) Send(parts ...[]byte) error {
	c := s.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if s.closed || c.werr != nil {
		return ErrClosed
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	msg := append(c.scratch[:0], 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(msg[1:5], uint32(n))
	for _, p := range parts {
		msg = append(msg, p...)
	}
	c.scratch = msg[:0]
	if !s.headersSent {
		if err := c.writeHeaders(s.id, false, ":status", "200", "content-type", "application/grpc"); err != nil {
			return err
		}
		s.headersSent = true
	}
	switch {
	case s.cur == nil && int64(len(msg)) <= min(s.sendWindow, c.sendWindow) && len(msg) <= int(c.peerMaxFrame):
		// The common case: one DATA frame, written now.
		return c.writeData(s, msg)
	case s.cur == nil || s.off == 0:
		s.cur, s.off = append(s.cur[:0], msg...), 0
	default:
		s.next = append(s.next[:0], msg...)
	}
	return c.flush(s)
}

// writeData writes b as one DATA frame of s. Called holding wmu.
func (c *conn) writeData(s *Stream, b []byte) error {
	if c.werr != nil {
		return ErrClosed
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	if err := c.fr.WriteData(s.id, false, b); err != nil {
		c.failWrite(err)
		return err
	}
	s.sendWindow -= int64(len(b))
	c.sendWindow -= int64(len(b))
	return nil
}

// flush writes what the windows allow of s's pending responses. Called
// holding wmu.
func (c *conn) flush(s *Stream) error {
	for s.cur != nil && !s.closed {
		room := min(s.sendWindow, c.sendWindow, int64(c.peerMaxFrame), int64(len(s.cur)-s.off))
		if room <= 0 {
			return nil
		}
		if err := c.writeData(s, s.cur[s.off:s.off+int(room)]); err != nil {
			return err
		}
		s.off += int(room)
		if s.off == len(s.cur) {
			s.cur, s.next, s.off = s.next, nil, 0
		}
	}
	return nil
}

// flushAll writes what the windows allow of every stream's pending
// responses. Called holding wmu.
func (c *conn) flushAll() {
	for _, s := range c.streams {
		if c.flush(s) != nil {
			return
		}
	}
}

// writeHeaders writes a HEADERS frame of the name, value pairs kv.
// Called holding wmu.
func (c *conn) writeHeaders(id uint32, end bool, kv ...string) error {
	if c.werr != nil {
		return ErrClosed
	}
	c.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		c.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: end, EndHeaders: true})
	if err != nil {
		c.failWrite(err)
	}
	return err
}

// write runs one control frame's write holding wmu.
func (c *conn) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	if err := f(); err != nil {
		c.failWrite(err)
	}
}

// failWrite records the first write error and closes the socket, which
// ends the reader. Called holding wmu.
func (c *conn) failWrite(err error) {
	if c.werr == nil {
		c.werr = err
		c.nc.Close()
	}
}

// halfClosed answers a client's end of its requests: trailers with OK.
func (c *conn) halfClosed(s *Stream) {
	c.endStream(s, statusOK, "")
}

// endStream sends s's trailers with status code (and msg) and ends it;
// a stream the client has not half-closed is then reset with NO_ERROR,
// as gRPC servers do.
func (c *conn) endStream(s *Stream, code int, msg string) {
	kv := []string{"grpc-status", strconv.Itoa(code)}
	if msg != "" {
		kv = append(kv, "grpc-message", msg)
	}
	c.wmu.Lock()
	if !s.headersSent {
		kv = append([]string{":status", "200", "content-type", "application/grpc"}, kv...)
	}
	c.writeHeaders(s.id, true, kv...)
	c.wmu.Unlock()
	if code != statusOK {
		c.writeReset(s.id, http2.ErrCodeNo)
	}
	if c.remove(s.id) != nil {
		var err error
		if code != statusOK {
			err = fmt.Errorf("h2ads: stream ended with grpc-status %d: %s", code, msg)
		}
		c.srv.h.Closed(s, err)
	}
}

// resetStream sends RST_STREAM and ends the stream, if open, with err.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.writeReset(id, code)
	if s := c.remove(id); s != nil {
		c.srv.h.Closed(s, err)
	}
}

func (c *conn) writeReset(id uint32, code http2.ErrCode) {
	c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

func (c *conn) goAway(code http2.ErrCode) {
	c.write(func() error { return c.fr.WriteGoAway(c.maxStreamID, code, nil) })
}

// remove forgets stream id and returns it, or nil if it was not open.
func (c *conn) remove(id uint32) *Stream {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	s := c.streams[id]
	if s == nil {
		return nil
	}
	delete(c.streams, id)
	s.closed, s.cur, s.next = true, nil, nil
	return s
}

// end closes the connection and ends its streams.
func (c *conn) end() {
	c.nc.Close()
	c.srv.forget(c)
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = ErrClosed
	}
	var ended []*Stream
	for id, s := range c.streams {
		delete(c.streams, id)
		s.closed, s.cur, s.next = true, nil, nil
		ended = append(ended, s)
	}
	c.wmu.Unlock()
	for _, s := range ended {
		c.srv.h.Closed(s, ErrClosed)
	}
}
