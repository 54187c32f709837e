package h2ads

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

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
