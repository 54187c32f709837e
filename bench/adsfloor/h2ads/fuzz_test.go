package h2ads

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// echo answers each request message with its bytes.
type echo struct{}

func (echo) Open(*Stream)                  {}
func (echo) Message(s *Stream, msg []byte) { s.Send(msg) }
func (echo) Closed(*Stream, error)         {}

// FuzzConn feeds a connection arbitrary frames after the preface and
// SETTINGS: whatever they are, serve must end (when the input does)
// without panicking.
func FuzzConn(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.AllowIllegalWrites = true
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", adsPath}, {"content-type", "application/grpc"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, false, []byte{0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0})
	fr.WriteData(1, false, []byte{0, 2, 'x', 'y'})
	fr.WriteWindowUpdate(1, 100)
	fr.WritePing(false, [8]byte{})
	fr.WriteData(1, true, nil)
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := New(adsPath, echo{}, Options{MaxRecvMsgSize: 1 << 10})
		cl, sv := net.Pipe()
		c := newConn(srv, sv)
		done := make(chan struct{})
		go func() { // ends when the pipe closes or the input is refused
			c.serve()
			close(done)
		}()
		go io.Copy(io.Discard, cl) // ends when the pipe closes
		var pre bytes.Buffer
		pre.WriteString(http2.ClientPreface)
		http2.NewFramer(&pre, nil).WriteSettings()
		cl.Write(pre.Bytes())
		cl.Write(in)
		cl.Close()
		<-done
	})
}
