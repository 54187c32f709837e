package evloop

import (
	"bytes"

	"golang.org/x/net/http2"
)

// h2Peer is what a peer's SETTINGS change on our side of an HTTP/2
// connection, the same for a client's connection and an upstream's.
type h2Peer struct {
	initWindow *int32  // SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   *uint32 // SETTINGS_MAX_FRAME_SIZE
	maxStreams *uint32 // SETTINGS_MAX_CONCURRENT_STREAMS; nil where it limits nothing we open
	enc        *hpackEnc
}

// applyH2Settings applies a (non-ACK) SETTINGS frame: shift moves every
// open stream's send window by the change of the initial window and reports
// false when one passes 2^31-1. It returns the error code for GOAWAY and
// false when a setting is invalid (RFC 9113 6.5.2) or a window overflows.
func applyH2Settings(f *http2.SettingsFrame, p h2Peer, shift func(delta int64) bool) (http2.ErrCode, bool) {
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			if p.maxStreams != nil {
				*p.maxStreams = s.Val
			}
		case http2.SettingInitialWindowSize:
			if !shift(int64(s.Val) - int64(*p.initWindow)) {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			*p.initWindow = int32(s.Val)
		case http2.SettingMaxFrameSize:
			*p.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			p.enc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err == nil {
		p.enc.PeerSettled()
		return 0, true
	}
	if ce, ok := err.(http2.ConnectionError); ok {
		return http2.ErrCode(ce), false
	}
	return http2.ErrCodeProtocol, false
}

// writeH2Headers writes the header block hb holds as one HEADERS frame
// and as many CONTINUATIONs as the peer's SETTINGS_MAX_FRAME_SIZE needs,
// then empties hb, and lets it go when a large block grew it past
// keptBlockCap, so that a connection does not hold a large head's buffer
// for its life (a response's block may reach the upstream list size, 64
// KiB). The Framer copies the frames into its writer's buffer; errors
// surface on the connection's write.
func writeH2Headers(fr *http2.Framer, maxFrame uint32, id uint32, hb *bytes.Buffer, end bool) {
	block := hb.Bytes()
	max := int(maxFrame)
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), max)]
		block = block[len(frag):]
		if first {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end,
				EndHeaders: len(block) == 0})
			first = false
		} else {
			_ = fr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
	hb.Reset()
	if hb.Cap() > keptBlockCap {
		*hb = bytes.Buffer{} // the HPACK encoder writes through a pointer to hb: still valid
	}
}

// keptBlockCap is the most a connection's header-block buffer keeps
// between blocks: typical heads are well under it.
const keptBlockCap = 4 << 10
