package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawH2Request is a request a raw h2c upstream read: its fields as sent
// (x/net's server would drop some: an expect holding 100-continue) and
// its body.
type rawH2Request struct {
	fields []hpack.HeaderField
	body   []byte
}

// values are the request's values of the field name, in order.
func (r *rawH2Request) values(name string) []string {
	var vv []string
	for _, f := range r.fields {
		if f.Name == name {
			vv = append(vv, f.Value)
		}
	}
	return vv
}

// rawH2Writer writes a raw h2c upstream's responses on one connection.
type rawH2Writer struct {
	c    net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

// headers writes a header block of fields (name, value pairs) on stream
// id, in HEADERS and CONTINUATION frames of at most frame bytes of it
// each (0: one HEADERS frame), and ends the stream with it if end.
func (w *rawH2Writer) headers(id uint32, end bool, frame int, fields ...string) {
	w.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = w.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	block := w.hbuf.Bytes()
	if frame <= 0 {
		frame = len(block)
	}
	first := block[:min(frame, len(block))]
	_ = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end,
		EndHeaders: len(first) == len(block)})
	for rest := block[len(first):]; len(rest) > 0; {
		n := min(frame, len(rest))
		_ = w.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
}

// data writes b as one DATA frame on stream id, ending it.
// control answers the frames of the connection itself that a raw
// server owes its client (a SETTINGS acknowledged, a PING answered, both
// flushed): handled when f was one of them, gone at a GOAWAY.
func (w *rawH2Writer) control(f http2.Frame) (handled, gone bool) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			_ = w.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			_ = w.fr.WritePing(true, f.Data)
		}
	case *http2.GoAwayFrame:
		return true, true
	default:
		return false, false
	}
	_ = w.bw.Flush()
	return true, false
}

func (w *rawH2Writer) data(id uint32, b []byte) { _ = w.fr.WriteData(id, true, b) }

// rest flushes what was written, then reads the connection until it
// ends or for at most 5 s, and returns the frames it read, one a line
// ("GOAWAY PROTOCOL_ERROR", "RST_STREAM 3 CANCEL", other frames by type
// and stream), then "closed" or "not closed". It is for a respond that
// made the proxy fail the connection. SETTINGS and PING acknowledgements
// and WINDOW_UPDATEs are left out: the proxy's replies to earlier frames,
// they may come before or after the response.
func (w *rawH2Writer) rest() string {
	_ = w.bw.Flush()
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []string
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return strings.Join(append(got, "not closed"), "\n")
			}
			return strings.Join(append(got, "closed"), "\n")
		}
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
		case *http2.SettingsFrame:
			if !f.IsAck() {
				got = append(got, "SETTINGS")
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				got = append(got, "PING")
			}
		case *http2.GoAwayFrame:
			got = append(got, "GOAWAY "+f.ErrCode.String())
		case *http2.RSTStreamFrame:
			got = append(got, fmt.Sprintf("RST_STREAM %d %v", f.StreamID, f.ErrCode))
		default:
			got = append(got, fmt.Sprintf("%v %d", f.Header().Type, f.Header().StreamID))
		}
	}
}

// rawH2Upstream serves h2c on loopback until the test ends with respond,
// called for each request once its stream's END_STREAM came, on the
// connection's reading goroutine; what it wrote is flushed after it.
// Its SETTINGS are the defaults (no SETTINGS_MAX_HEADER_LIST_SIZE, 16 KiB
// frames).
func rawH2Upstream(t *testing.T, respond func(w *rawH2Writer, id uint32, r *rawH2Request)) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) { serveRawH2(c, respond) }) // ends when the proxy closes the connection or breaks HTTP/2
}

// acceptRawH2 reads the client preface on c and starts a raw h2c
// upstream's side of the connection: a writer whose framer reads header
// blocks whole, and its SETTINGS frame (with settings) written and
// flushed. It returns nil when c does not start with the preface.
func acceptRawH2(c net.Conn, settings ...http2.Setting) *rawH2Writer {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return nil
	}
	w := &rawH2Writer{c: c, bw: bufio.NewWriter(c)}
	w.fr = http2.NewFramer(w.bw, c)
	w.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	w.enc = hpack.NewEncoder(&w.hbuf)
	_ = w.fr.WriteSettings(settings...)
	_ = w.bw.Flush()
	return w
}

func serveRawH2(c net.Conn, respond func(w *rawH2Writer, id uint32, r *rawH2Request)) {
	defer c.Close()
	w := acceptRawH2(c)
	if w == nil {
		return
	}
	w.fr.MaxHeaderListSize = 1 << 20
	streams := map[uint32]*rawH2Request{}
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			return
		}
		if handled, gone := w.control(f); gone {
			return
		} else if handled {
			continue
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			streams[id] = &rawH2Request{fields: append([]hpack.HeaderField(nil), f.Fields...)}
			if f.StreamEnded() {
				respond(w, id, streams[id])
				delete(streams, id)
			}
		case *http2.DataFrame:
			r := streams[id]
			if r == nil {
				continue
			}
			r.body = append(r.body, f.Data()...)
			if n := uint32(len(f.Data())); n > 0 {
				_ = w.fr.WriteWindowUpdate(0, n)
				_ = w.fr.WriteWindowUpdate(id, n)
			}
			if f.StreamEnded() {
				respond(w, id, r)
				delete(streams, id)
			}
		}
		_ = w.bw.Flush()
	}
}
