package evloop

import (
	"bytes"
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Heads reads a connection's frames and decodes its header blocks (a
// HEADERS frame and its CONTINUATIONs) into http2.MetaHeadersFrames, with
// the rules of the Framer's own ReadMetaHeaders: the same header list
// limit and truncation, the same field checks, and the same errors by
// kind (a connection error for a block too large or undecodable, a
// stream error for an invalid field or pseudo-header).
//
// Why not the Framer's: it appends each field to a slice that starts
// empty, so a request's 7-9 fields cost 4-5 allocations that grow it
// (48, 80, 160, 320 bytes...), 1.1 KB a request through an h2c proxy,
// 40 % of what the loops allocate per request. Here a block is decoded
// into one slice the connection reuses, lent to the caller until the next
// frame: what is kept is copied by its keeper (a client's request into its
// stream's recycled room, h2stream.keepHead; trailers). Measured at h2c
// saturation through one proxy, with the upstream side's fields pre-sized
// (h2uExtra): from 2,684 bytes and 29 allocations a request to 1,925 and
// 13, and GC cycles per request down 27 % (docs/bench/proxy.md, round 14);
// the copy a block's fields once had of their own went in round 37.
type h2Heads struct {
	dec *hpack.Decoder
	// max is the header list limit (the Framer's MaxHeaderListSize).
	max uint32
	// The block being decoded: fields is reused from block to block.
	fields                        []hpack.HeaderField
	headersRemain, trailersRemain uint32
	sawRegular, truncated         bool
	invalid                       error
	// mh is the *http2.MetaHeadersFrame readFrame returns, and its
	// fields are fields: both the decoder's until its next call, not
	// copies. A caller that keeps them copies them: a client's stream its
	// request (h2stream.keepHead), a stream its trailers (h2uTrailers,
	// h2uHeaders); a response's head is relayed or refused before the
	// next frame is read.
	mh http2.MetaHeadersFrame
}

// newH2Heads returns a decoder for header lists of at most max bytes (0:
// the Framer's default, 16 MiB).
func newH2Heads(max uint32) *h2Heads {
	if max == 0 {
		max = 16 << 20
	}
	h := &h2Heads{max: max}
	// HPACK's default table: neither side of the loops advertises
	// SETTINGS_HEADER_TABLE_SIZE (h2settings.go changes the encoder only);
	// advertising one would need SetMaxDynamicTableSize here.
	h.dec = hpack.NewDecoder(4096, h.emit)
	if int(max) > 0 {
		h.dec.SetMaxStringLength(int(max))
	}
	return h
}

// maxKeptFields bounds the capacity fields keeps between blocks.
const maxKeptFields = 64

// readFrame reads fr's next frame; a HEADERS frame comes back, with its
// CONTINUATIONs read, as a *http2.MetaHeadersFrame that is the decoder's
// until the next call (h2Heads.mh). fr must not have ReadMetaHeaders set.
func (h *h2Heads) readFrame(fr *http2.Framer) (http2.Frame, error) {
	// The last block's frame and fields were the caller's until this
	// call. Cleared, a caller that kept them finds no fields, which the
	// tests of relayed heads, trailers and kept requests would see.
	h.mh = http2.MetaHeadersFrame{}
	h.forget()
	f, err := fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	hf, ok := f.(*http2.HeadersFrame)
	if !ok {
		return f, nil
	}
	h.headersRemain, h.trailersRemain = h.max, h.max
	h.sawRegular, h.truncated, h.invalid = false, false, nil
	h.fields = h.fields[:0]
	h.dec.SetEmitEnabled(true)
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// A fragment far over what is left of the list, or any after an
		// invalid field, ends the connection undecoded.
		if int64(len(frag)) > 2*int64(h.headersRemain+h.trailersRemain) || h.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := h.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf, ok := f.(*http2.ContinuationFrame)
		if !ok { // the Framer lets nothing else follow (checkFrameOrder)
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := h.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if h.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: h.invalid}
	}
	h.mh = http2.MetaHeadersFrame{HeadersFrame: hf, Fields: h.fields, Truncated: h.truncated}
	mh := &h.mh
	if err := checkPseudos(mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return mh, nil
}

// done drops what a connection's reading holds once the frames read are
// acted on: rd's reference into the read buffer it was reset to (the
// Framer's source), and the last block's frame and fields, so that
// neither a buffer grown for a large block nor the block's fields are
// held while the connection waits for its next frames.
func (h *h2Heads) done(rd *bytes.Reader) {
	rd.Reset(nil)
	h.mh = http2.MetaHeadersFrame{}
	h.forget()
}

// forget drops the block's fields (their strings) and, past
// maxKeptFields, the slice.
func (h *h2Heads) forget() {
	clear(h.fields)
	if cap(h.fields) > maxKeptFields {
		h.fields = nil
	}
	h.fields = h.fields[:0]
}

// emit takes one decoded field (the Framer's rules).
func (h *h2Heads) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		h.invalid = errH2FieldValue // the value may be sensitive: not quoted
	}
	if strings.HasPrefix(hf.Name, ":") {
		if h.sawRegular {
			h.invalid = errH2PseudoAfterRegular
		}
	} else {
		h.sawRegular = true
		if !validWireFieldName(hf.Name) {
			h.invalid = errH2FieldName
		}
	}
	if h.invalid != nil {
		h.dec.SetEmitEnabled(false)
		return
	}
	remain, size := &h.headersRemain, hf.Size()
	if hf.Name == "trailer" {
		// Each name a trailer field announces counts as a field of its
		// own against the trailers' budget.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		remain, size = &h.trailersRemain, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *remain {
		h.dec.SetEmitEnabled(false)
		h.truncated = true
		h.headersRemain, h.trailersRemain = 0, 0
		return
	}
	*remain -= size
	h.fields = append(h.fields, hf)
}

var (
	errH2FieldValue         = errors.New("invalid header field value")
	errH2FieldName          = errors.New("invalid header field name")
	errH2PseudoAfterRegular = errors.New("pseudo header field after regular")
	errH2Pseudo             = errors.New("invalid, duplicate or mixed pseudo-header fields")
)

// validWireFieldName: a token without upper case (RFC 9113 8.2.1).
func validWireFieldName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos refuses unknown and duplicate pseudo-header fields, and a
// request's beside a response's.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return errH2Pseudo
		}
		for _, prev := range pf[:i] {
			if prev.Name == hf.Name {
				return errH2Pseudo
			}
		}
	}
	if request && response {
		return errH2Pseudo
	}
	return nil
}
