package evloop

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2HeadsOutcome is what reading one frame gave: the frame's decoded
// fields and flags, or the error's kind.
type h2HeadsOutcome struct {
	Kind      string // "frame", "stream", "conn", "other"
	Code      http2.ErrCode
	StreamID  uint32
	Fields    []hpack.HeaderField
	Truncated bool
	Ended     bool
	Type      http2.FrameType
}

func h2HeadsOutcomeOf(f http2.Frame, err error) h2HeadsOutcome {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return h2HeadsOutcome{Kind: "stream", Code: se.Code, StreamID: se.StreamID}
	case errors.As(err, &ce):
		return h2HeadsOutcome{Kind: "conn", Code: http2.ErrCode(ce)}
	case err != nil:
		return h2HeadsOutcome{Kind: "other"}
	}
	o := h2HeadsOutcome{Kind: "frame", Type: f.Header().Type, StreamID: f.Header().StreamID}
	if mh, ok := f.(*http2.MetaHeadersFrame); ok {
		// Copied, as a stream keeps them (h2stream.keepHead): h2Heads
		// lends its fields until the next frame.
		o.Fields, o.Truncated, o.Ended = slices.Clone(mh.Fields), mh.Truncated, mh.StreamEnded()
	}
	return o
}

// compareH2Heads reads every frame of wire with the Framer's own
// ReadMetaHeaders and with h2Heads, both with the header list limit max,
// and fails at the first difference. Reading stops at the first
// connection error (or other error), as the loops do.
func compareH2Heads(t *testing.T, wire []byte, max uint32) {
	t.Helper()
	want := http2.NewFramer(nil, bytes.NewReader(wire))
	want.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	want.MaxHeaderListSize = max
	got := http2.NewFramer(nil, bytes.NewReader(wire))
	got.MaxHeaderListSize = max
	heads := newH2Heads(max)
	// Every outcome is compared again at the end: a frame's fields, as
	// copied, must not change when later blocks are decoded.
	var wants, gots []h2HeadsOutcome
	defer func() {
		for i := range wants {
			if !reflect.DeepEqual(wants[i], gots[i]) {
				t.Fatalf("frame %d changed after later frames were read: the Framer's\n%+v\nh2Heads'\n%+v", i, wants[i], gots[i])
			}
		}
	}()
	for i := 0; ; i++ {
		w := h2HeadsOutcomeOf(want.ReadFrame())
		g := h2HeadsOutcomeOf(heads.readFrame(got))
		if len(w.Fields) == 0 {
			w.Fields = nil
		}
		if len(g.Fields) == 0 {
			g.Fields = nil
		}
		if !reflect.DeepEqual(w, g) {
			t.Fatalf("frame %d: the Framer's reading gave\n%+v\nh2Heads gave\n%+v", i, w, g)
		}
		wants, gots = append(wants, w), append(gots, g)
		if w.Kind == "conn" || w.Kind == "other" {
			return
		}
	}
}

// h2Block writes one header block for stream id: fields encoded with enc,
// split into a HEADERS frame and CONTINUATIONs of at most chunk bytes.
func h2Block(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer, id uint32, end bool, chunk int, fields ...hpack.HeaderField) {
	buf.Reset()
	for _, f := range fields {
		_ = enc.WriteField(f)
	}
	h2BlockRaw(fr, id, end, chunk, buf.Bytes())
}

func h2BlockRaw(fr *http2.Framer, id uint32, end bool, chunk int, block []byte) {
	first := block[:min(chunk, len(block))]
	rest := block[len(first):]
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(rest) == 0})
	for len(rest) > 0 {
		n := min(chunk, len(rest))
		_ = fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
}

func hf(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }

// TestH2HeadsSameAsFramer: h2Heads decodes what the Framer's
// ReadMetaHeaders decodes, field for field, and fails where it fails,
// with the same kind of error, on requests, responses, trailers, invalid
// fields and pseudo-headers, lists over the limit, and blocks split over
// CONTINUATIONs, one connection (one dynamic table) through all of them.
func TestH2HeadsSameAsFramer(t *testing.T) {
	req := []hpack.HeaderField{hf(":method", "GET"), hf(":scheme", "http"), hf(":authority", "a.example"), hf(":path", "/x?y=1"),
		hf("user-agent", "h2load"), hf("accept", "*/*"), hf("x-request-id", "0f6c9c52-5c0e-4b0f-9a4e-6c2d8d1c1f11")}
	resp := []hpack.HeaderField{hf(":status", "200"), hf("content-type", "text/plain"), hf("content-length", "2")}
	cases := map[string]func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer){
		"requests and responses": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			for id := uint32(1); id < 40; id += 2 {
				h2Block(fr, enc, buf, id, id%3 == 0, 16384, req...)
				h2Block(fr, enc, buf, id, true, 16384, resp...)
			}
		},
		"continuations": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			for chunk := 1; chunk < 40; chunk += 3 {
				h2Block(fr, enc, buf, uint32(2*chunk+1), false, chunk, req...)
			}
		},
		"trailers": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			h2Block(fr, enc, buf, 1, false, 100, append(req, hf("trailer", "a, b,c"))...)
			h2Block(fr, enc, buf, 1, true, 100, hf("grpc-status", "0"), hf("grpc-message", ""))
		},
		"invalid value":        block1(req, hf("x-bad", "a\x00b")),
		"upper-case name":      block1(req, hf("X-Upper", "v")),
		"empty name":           block1(req, hf("", "v")),
		"pseudo after regular": block1(append([]hpack.HeaderField{hf("accept", "*/*")}, req...)),
		"unknown pseudo":       block1(req, hf(":unknown", "x")),
		"duplicate pseudo":     block1([]hpack.HeaderField{hf(":method", "GET"), hf(":method", "POST"), hf(":path", "/")}),
		"mixed pseudo":         block1([]hpack.HeaderField{hf(":status", "200"), hf(":path", "/")}),
		"invalid then continuation": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			h2Block(fr, enc, buf, 1, false, 40, append(req, hf("x-bad", "a\nb"), hf("x-more", "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"))...)
		},
		"over the limit": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			big := bytes.Repeat([]byte("v"), 300)
			h2Block(fr, enc, buf, 1, true, 16384, append(req, hf("x-big", string(big)))...)
			h2Block(fr, enc, buf, 3, true, 16384, req...)
			h2Block(fr, enc, buf, 5, true, 64, append(req, hf("x-big", string(big)), hf("x-big2", string(big)), hf("x-big3", string(big)))...)
		},
		"trailer names over the limit": block1(req, hf("trailer", string(bytes.Repeat([]byte("a,"), 200)))),
		"bad hpack": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			h2Block(fr, enc, buf, 1, true, 16384, req...)
			h2BlockRaw(fr, 3, true, 16384, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
		},
		"truncated hpack": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			h2BlockRaw(fr, 1, true, 16384, []byte{0x40, 0x05, 'a'})
		},
		"continuation alone": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			_ = fr.WriteContinuation(1, true, []byte{0x82})
		},
		"data between": func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}})
			_ = fr.WriteData(1, true, []byte("x"))
		},
	}
	for name, write := range cases {
		t.Run(name, func(t *testing.T) {
			var wire, buf bytes.Buffer
			fr := http2.NewFramer(&wire, nil)
			enc := hpack.NewEncoder(&buf)
			write(fr, enc, &buf)
			_ = fr.WritePing(false, [8]byte{1})
			compareH2Heads(t, wire.Bytes(), 512)
			compareH2Heads(t, wire.Bytes(), 0)
		})
	}
}

// block1 writes one request block: fields, then extra.
func block1(fields []hpack.HeaderField, extra ...hpack.HeaderField) func(*http2.Framer, *hpack.Encoder, *bytes.Buffer) {
	return func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer) {
		h2Block(fr, enc, buf, 1, true, 16384, append(append([]hpack.HeaderField{}, fields...), extra...)...)
		h2Block(fr, enc, buf, 3, true, 16384, fields...)
	}
}

// TestH2HeadsRandomBlocks: random header blocks, random bytes as
// fragments among them, compared with the Framer's reading.
func TestH2HeadsRandomBlocks(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	names := []string{":method", ":path", ":status", ":authority", "accept", "trailer", "X-Up", "x-a", "", "te", "cookie"}
	values := []string{"", "GET", "/", "200", "a,b", "v\x01", "x y", string(bytes.Repeat([]byte("z"), 120))}
	for i := range 300 {
		var wire, buf bytes.Buffer
		fr := http2.NewFramer(&wire, nil)
		enc := hpack.NewEncoder(&buf)
		for b := range 1 + rnd.IntN(6) {
			id := uint32(2*b + 1)
			if rnd.IntN(8) == 0 {
				junk := make([]byte, 1+rnd.IntN(12))
				for j := range junk {
					junk[j] = byte(rnd.Uint32())
				}
				h2BlockRaw(fr, id, true, 1+rnd.IntN(8), junk)
				continue
			}
			var fields []hpack.HeaderField
			for range rnd.IntN(10) {
				fields = append(fields, hf(names[rnd.IntN(len(names))], values[rnd.IntN(len(values))]))
			}
			if len(fields) == 0 {
				fields = append(fields, hf(":status", "204"))
			}
			h2Block(fr, enc, &buf, id, rnd.IntN(2) == 0, 1+rnd.IntN(64), fields...)
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			compareH2Heads(t, wire.Bytes(), uint32(100+rnd.IntN(600)))
		})
	}
}

// FuzzH2Heads: any bytes, read as frames both ways, give the same.
func FuzzH2Heads(f *testing.F) {
	var wire, buf bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	enc := hpack.NewEncoder(&buf)
	h2Block(fr, enc, &buf, 1, true, 5, hf(":method", "GET"), hf(":path", "/"), hf("a", "b"))
	f.Add(bytes.Clone(wire.Bytes()), uint16(300))
	wire.Reset()
	h2Block(fr, enc, &buf, 1, false, 16384, hf(":method", "POST"), hf(":path", "/"), hf("trailer", "x,y"))
	h2Block(fr, enc, &buf, 1, true, 3, hf("x", "1"), hf("Y", "2"))
	f.Add(bytes.Clone(wire.Bytes()), uint16(100))
	wire.Reset()
	buf.Reset()
	_ = enc.WriteField(hf(":status", "200"))
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: buf.Bytes(), EndHeaders: true, PadLength: 7})
	h2Block(fr, enc, &buf, 5, true, 16384, hf(":status", "200"), hf("v", "a\x7fb"))
	f.Add(bytes.Clone(wire.Bytes()), uint16(0))
	f.Fuzz(func(t *testing.T, wire []byte, max uint16) {
		compareH2Heads(t, wire, uint32(max))
	})
}

// TestH2HeadsAllocations: decoding a request's block allocates the
// Framer's HeadersFrame and nothing else once its fields are in the
// connection's dynamic table (a client's second request on a connection,
// and every one after): the fields are decoded into the decoder's slice
// and lent (round 36 copied them into one of their own per block).
func TestH2HeadsAllocations(t *testing.T) {
	var wire, buf bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	enc := hpack.NewEncoder(&buf)
	req := []hpack.HeaderField{hf(":method", "GET"), hf(":scheme", "http"), hf(":authority", "a.example"), hf(":path", "/"),
		hf("user-agent", "h2load"), hf("accept", "*/*"), hf("accept-encoding", "gzip")}
	h2Block(w, enc, &buf, 1, true, 16384, req...)
	first := bytes.Clone(wire.Bytes())
	wire.Reset()
	h2Block(w, enc, &buf, 3, true, 16384, req...)
	again := bytes.Clone(wire.Bytes())
	count := func(fr *http2.Framer, rd *bytes.Reader, read func() (http2.Frame, error)) float64 {
		rd.Reset(first)
		if _, err := read(); err != nil {
			t.Fatal(err)
		}
		return testing.AllocsPerRun(200, func() {
			rd.Reset(again)
			f, err := read()
			if err != nil {
				t.Fatal(err)
			}
			if n := len(f.(*http2.MetaHeadersFrame).Fields); n != len(req) {
				t.Fatalf("%d fields, want %d", n, len(req))
			}
		})
	}
	var rd bytes.Reader
	fr := http2.NewFramer(nil, &rd)
	heads := newH2Heads(1 << 16)
	mine := count(fr, &rd, func() (http2.Frame, error) { return heads.readFrame(fr) })
	theirs := http2.NewFramer(nil, &rd)
	theirs.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	framer := count(theirs, &rd, theirs.ReadFrame)
	t.Logf("allocations per request block: h2Heads %.0f, the Framer's ReadMetaHeaders %.0f", mine, framer)
	if mine > 1 {
		t.Fatalf("h2Heads allocates %.0f times per block, want 1 (the Framer's HeadersFrame)", mine)
	}
}
