package h2ads

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
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

// serve reads the connection's frames until it fails or closes, then
// ends every stream.
func (c *conn) serve() {
	defer c.end()
	c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return // not HTTP/2 with prior knowledge: nothing to answer
	}
	opts := c.srv.opts
	c.write(func() error {
		if err := c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: opts.MaxConcurrentStreams},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: opts.RecvWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
		); err != nil {
			return err
		}
		return c.fr.WriteWindowUpdate(0, opts.RecvWindow-65535)
	})
	c.recvAvail = int64(opts.RecvWindow)
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ce http2.ConnectionError
			var se http2.StreamError
			switch {
			case errors.As(err, &se):
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("h2ads: %w", se))
				continue
			case errors.As(err, &ce):
				c.goAway(http2.ErrCode(ce))
			}
			return
		}
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAway(http2.ErrCodeProtocol)
				return
			}
			c.nc.SetReadDeadline(time.Time{})
			first = false
		}
		if code := c.handle(f); code != http2.ErrCodeNo {
			c.goAway(code)
			return
		}
	}
}

// handle acts on one frame; a code other than ErrCodeNo is a connection
// error.
func (c *conn) handle(f http2.Frame) http2.ErrCode {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.settings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.write(func() error { return c.fr.WritePing(true, f.Data) })
		}
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.RSTStreamFrame:
		if s := c.remove(f.StreamID); s != nil {
			c.srv.h.Closed(s, errReset)
		}
	case *http2.GoAwayFrame:
		return http2.ErrCodeNo // the client leaves; its streams end with the connection
	case *http2.PushPromiseFrame:
		return http2.ErrCodeProtocol // a client must not push
	}
	return http2.ErrCodeNo // PRIORITY, unknown types: ignored
}

func (c *conn) settings(f *http2.SettingsFrame) http2.ErrCode {
	if f.IsAck() {
		return http2.ErrCodeNo
	}
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return http2.ErrCode(ce)
		}
		return http2.ErrCodeProtocol
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitial
			c.peerInitial = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if c.werr != nil {
		return http2.ErrCodeNo
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	if err := c.fr.WriteSettingsAck(); err != nil {
		c.failWrite(err)
		return http2.ErrCodeNo
	}
	c.flushAll()
	return http2.ErrCodeNo
}

func (c *conn) windowUpdate(f *http2.WindowUpdateFrame) http2.ErrCode {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			return http2.ErrCodeFlowControl
		}
		c.flushAll()
		return http2.ErrCodeNo
	}
	s := c.streams[f.StreamID]
	if s == nil {
		return http2.ErrCodeNo // a stream that ended: the update may cross its end
	}
	s.sendWindow += int64(f.Increment)
	if s.sendWindow > maxWindow {
		c.wmu.Unlock()
		c.resetStream(s.id, http2.ErrCodeFlowControl, errors.New("h2ads: stream window above 2^31-1"))
		c.wmu.Lock()
		return http2.ErrCodeNo
	}
	c.flush(s)
	return http2.ErrCodeNo
}

func (c *conn) headers(f *http2.MetaHeadersFrame) http2.ErrCode {
	id := f.StreamID
	c.wmu.Lock()
	s := c.streams[id]
	c.wmu.Unlock()
	if s != nil {
		// Trailers: a gRPC client sends none; ending the stream is all
		// they may do.
		if !f.StreamEnded() {
			c.resetStream(id, http2.ErrCodeProtocol, errors.New("h2ads: headers after the request's headers"))
			return http2.ErrCodeNo
		}
		c.halfClosed(s)
		return http2.ErrCodeNo
	}
	if id%2 == 0 || id <= c.maxStreamID {
		return http2.ErrCodeProtocol // RFC 9113 5.1.1
	}
	c.maxStreamID = id
	c.wmu.Lock()
	open := len(c.streams)
	c.wmu.Unlock()
	switch {
	case f.Truncated:
		c.writeReset(id, http2.ErrCodeProtocol)
		return http2.ErrCodeNo
	case uint32(open) >= c.srv.opts.MaxConcurrentStreams:
		c.writeReset(id, http2.ErrCodeRefusedStream)
		return http2.ErrCodeNo
	case f.PseudoValue("method") != "POST" || !strings.HasPrefix(f.PseudoValue("path"), "/") ||
		!strings.HasPrefix(headerValue(f, "content-type"), "application/grpc"):
		c.writeReset(id, http2.ErrCodeProtocol)
		return http2.ErrCodeNo
	case f.PseudoValue("path") != c.srv.path:
		c.wmu.Lock()
		c.writeHeaders(id, true, ":status", "200", "content-type", "application/grpc",
			"grpc-status", strconv.Itoa(statusUnimplemented), "grpc-message", "unknown method")
		c.wmu.Unlock()
		return http2.ErrCodeNo
	}
	s = &Stream{c: c, id: id, recvAvail: int64(c.srv.opts.RecvWindow)}
	c.wmu.Lock()
	s.sendWindow = c.peerInitial
	c.streams[id] = s
	c.wmu.Unlock()
	c.srv.h.Open(s)
	if f.StreamEnded() {
		c.halfClosed(s)
	}
	return http2.ErrCodeNo
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

func (c *conn) data(f *http2.DataFrame) http2.ErrCode {
	n := int64(f.Header().Length) // padding counts against the windows
	c.recvAvail -= n
	if c.recvAvail < 0 {
		return http2.ErrCodeFlowControl
	}
	c.recvUnacked += n
	if window := int64(c.srv.opts.RecvWindow); c.recvUnacked >= window/4 {
		inc := c.recvUnacked
		c.recvUnacked, c.recvAvail = 0, c.recvAvail+inc
		c.write(func() error { return c.fr.WriteWindowUpdate(0, uint32(inc)) })
	}
	c.wmu.Lock()
	s := c.streams[f.StreamID]
	c.wmu.Unlock()
	if s == nil {
		if f.StreamID > c.maxStreamID {
			return http2.ErrCodeProtocol // DATA on an idle stream
		}
		c.writeReset(f.StreamID, http2.ErrCodeStreamClosed)
		return http2.ErrCodeNo
	}
	s.recvAvail -= n
	if s.recvAvail < 0 {
		c.resetStream(s.id, http2.ErrCodeFlowControl, errors.New("h2ads: stream window exceeded"))
		return http2.ErrCodeNo
	}
	s.recvUnacked += n
	if window := int64(c.srv.opts.RecvWindow); s.recvUnacked >= window/4 && !f.StreamEnded() {
		inc := s.recvUnacked
		s.recvUnacked, s.recvAvail = 0, s.recvAvail+inc
		c.write(func() error { return c.fr.WriteWindowUpdate(s.id, uint32(inc)) })
	}
	if !c.consume(s, f.Data()) {
		return http2.ErrCodeNo
	}
	if f.StreamEnded() {
		c.halfClosed(s)
	}
	return http2.ErrCodeNo
}

// consume takes request bytes of s and hands each whole message to the
// Handler; false when s was ended for a bad message.
func (c *conn) consume(s *Stream, b []byte) bool {
	if len(s.rbuf) == 0 {
		// Whole messages are handed out of the frame's own bytes.
		rest, ok := c.messages(s, b)
		if ok {
			s.rbuf = append(s.rbuf, rest...)
		}
		return ok
	}
	s.rbuf = append(s.rbuf, b...)
	rest, ok := c.messages(s, s.rbuf)
	if ok {
		s.rbuf = s.rbuf[:copy(s.rbuf, rest)]
	}
	return ok
}

// messages hands each whole message of b to the Handler and returns the
// bytes left; false when s was ended for a bad message.
func (c *conn) messages(s *Stream, b []byte) ([]byte, bool) {
	for len(b) >= 5 {
		n := binary.BigEndian.Uint32(b[1:5])
		switch {
		case b[0] != 0:
			c.endStream(s, statusInternal, "compressed message, none negotiated")
			return nil, false
		case int64(n) > int64(c.srv.opts.MaxRecvMsgSize):
			c.endStream(s, statusResourceExhausted, fmt.Sprintf("message of %d bytes, more than %d", n, c.srv.opts.MaxRecvMsgSize))
			return nil, false
		case len(b) < 5+int(n):
			return b, true
		}
		c.srv.h.Message(s, b[5:5+n])
		b = b[5+n:]
	}
	return b, true
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
