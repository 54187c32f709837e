package cluster

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
)

// TestH2ConnProtocolReset: h2Conn finds the RST_STREAM PROTOCOL_ERROR
// x/net's client writes for a malformed response, and nothing else,
// however the writes cut the frames: after the preface, a SETTINGS, a
// HEADERS, DATA whose payload holds what reads as such a reset, a
// WINDOW_UPDATE whose payload is that code, resets with other codes and a
// GOAWAY PROTOCOL_ERROR, only the last frame's end reports it.
func TestH2ConnProtocolReset(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82, 0x86}, EndHeaders: true})
	var fake bytes.Buffer
	_ = http2.NewFramer(&fake, nil).WriteRSTStream(1, http2.ErrCodeProtocol)
	_ = fr.WriteData(1, false, fake.Bytes())
	_ = fr.WriteWindowUpdate(1, uint32(http2.ErrCodeProtocol)) // a 4-byte payload of the same bytes
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = fr.WriteRSTStream(3, http2.ErrCodeNo)
	_ = fr.WriteGoAway(0, http2.ErrCodeProtocol, nil)
	clean := b.Len()
	_ = fr.WriteRSTStream(5, http2.ErrCodeProtocol)
	all := b.Bytes()
	for _, size := range []int{1, 2, 3, 5, 7, 9, 13, 64, len(all)} {
		w := newH2Conn(nil, nil)
		found := -1
		for off := 0; off < len(all); off += size {
			end := min(off+size, len(all))
			if w.protocolReset(all[off:end]) && found < 0 {
				found = end
			}
		}
		if found != len(all) {
			t.Errorf("writes of %d bytes: reset found at byte %d, want %d (the frames before end at %d)", size, found, len(all), clean)
		}
	}
}
