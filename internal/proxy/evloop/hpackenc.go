package evloop

import (
	"bytes"

	"golang.org/x/net/http2/hpack"
)

// hpackEnc encodes the header blocks the loops send (RFC 7541) without
// the dynamic table: a field the static table holds whole is its index,
// every other is a literal that is not indexed, its name the static
// table's index where it has one, its strings not Huffman-coded. The
// peer's decoder keeps an empty table, so the encoder has no state but
// the table size update a smaller SETTINGS_HEADER_TABLE_SIZE asks for.
//
// Measured, not assumed (docs/bench/proxy.md, "HPACK without the dynamic
// table"): x/net's Encoder, which searches its dynamic table through maps
// for every field, was 10 % of a proxy's CPU at h2c saturation. On the two
// blocks of a proxied request and its response this encoder takes about
// 200 ns against x/net's 740-920 (BenchmarkHPACKEncode), and sends 271
// bytes against 14. With it, CPU per request at saturation fell 7-9 %.
// The bytes grow with what a client repeats: a large token or cookie now
// crosses each hop with every request, where the dynamic table sent it
// once per connection.
type hpackEnc struct {
	w *bytes.Buffer
	// limit is the largest table the peer allows (its SETTINGS_HEADER_TABLE_SIZE,
	// 4096 until it says); update, that the next block must start by
	// telling the peer our table is empty, after the limit went down.
	limit  uint32
	update bool
}

func newHPACKEnc(w *bytes.Buffer) *hpackEnc { return &hpackEnc{w: w, limit: 4096} }

// SetMaxDynamicTableSizeLimit takes the peer's SETTINGS_HEADER_TABLE_SIZE.
// A decoder whose limit went below the table size it last heard of waits
// for a size update (RFC 7541 4.2): the next block starts with one, to 0.
func (e *hpackEnc) SetMaxDynamicTableSizeLimit(v uint32) {
	if v < e.limit {
		e.update = true
	}
	e.limit = v
}

// WriteField appends f's representation to the block being encoded; it
// never fails (the error is hpack.Encoder's signature).
func (e *hpackEnc) WriteField(f hpack.HeaderField) error {
	b := e.w.AvailableBuffer()
	if e.update {
		e.update = false
		b = append(b, 0x20) // dynamic table size update (001 prefix) to 0
	}
	name, whole := staticIndex(f.Name, f.Value)
	switch {
	case whole != 0 && !f.Sensitive:
		b = hpackInt(b, 0x80, 7, uint64(whole)) // indexed field
	default:
		first := byte(0x00) // literal, not indexed
		if f.Sensitive {
			first = 0x10 // literal, never indexed
		}
		b = hpackInt(b, first, 4, uint64(name))
		if name == 0 {
			b = hpackString(b, f.Name)
		}
		b = hpackString(b, f.Value)
	}
	_, _ = e.w.Write(b)
	return nil
}

// hpackInt appends i with an n-bit prefix after the bits of first (RFC 7541 5.1).
func hpackInt(b []byte, first byte, n uint, i uint64) []byte {
	max := uint64(1)<<n - 1
	if i < max {
		return append(b, first|byte(i))
	}
	b = append(b, first|byte(max))
	for i -= max; i >= 128; i >>= 7 {
		b = append(b, byte(i&0x7f|0x80))
	}
	return append(b, byte(i))
}

// hpackString appends s as a string literal that is not Huffman-coded (5.2).
func hpackString(b []byte, s string) []byte {
	return append(hpackInt(b, 0, 7, uint64(len(s))), s...)
}

// staticIndex returns the index of name in RFC 7541's static table
// (Appendix A), 0 when it has none, and that of name and value together
// when the table holds the pair.
func staticIndex(name, value string) (nameIdx, whole uint8) {
	switch name {
	case ":authority":
		return 1, 0
	case ":method":
		switch value {
		case "GET":
			return 2, 2
		case "POST":
			return 2, 3
		}
		return 2, 0
	case ":path":
		switch value {
		case "/":
			return 4, 4
		case "/index.html":
			return 4, 5
		}
		return 4, 0
	case ":scheme":
		switch value {
		case "http":
			return 6, 6
		case "https":
			return 6, 7
		}
		return 6, 0
	case ":status":
		switch value {
		case "200":
			return 8, 8
		case "204":
			return 8, 9
		case "206":
			return 8, 10
		case "304":
			return 8, 11
		case "400":
			return 8, 12
		case "404":
			return 8, 13
		case "500":
			return 8, 14
		}
		return 8, 0
	case "accept-encoding":
		if value == "gzip, deflate" {
			return 16, 16
		}
		return 16, 0
	case "accept-charset":
		return 15, 0
	case "accept-language":
		return 17, 0
	case "accept-ranges":
		return 18, 0
	case "accept":
		return 19, 0
	case "access-control-allow-origin":
		return 20, 0
	case "age":
		return 21, 0
	case "allow":
		return 22, 0
	case "authorization":
		return 23, 0
	case "cache-control":
		return 24, 0
	case "content-disposition":
		return 25, 0
	case "content-encoding":
		return 26, 0
	case "content-language":
		return 27, 0
	case "content-length":
		return 28, 0
	case "content-location":
		return 29, 0
	case "content-range":
		return 30, 0
	case "content-type":
		return 31, 0
	case "cookie":
		return 32, 0
	case "date":
		return 33, 0
	case "etag":
		return 34, 0
	case "expect":
		return 35, 0
	case "expires":
		return 36, 0
	case "from":
		return 37, 0
	case "host":
		return 38, 0
	case "if-match":
		return 39, 0
	case "if-modified-since":
		return 40, 0
	case "if-none-match":
		return 41, 0
	case "if-range":
		return 42, 0
	case "if-unmodified-since":
		return 43, 0
	case "last-modified":
		return 44, 0
	case "link":
		return 45, 0
	case "location":
		return 46, 0
	case "max-forwards":
		return 47, 0
	case "proxy-authenticate":
		return 48, 0
	case "proxy-authorization":
		return 49, 0
	case "range":
		return 50, 0
	case "referer":
		return 51, 0
	case "refresh":
		return 52, 0
	case "retry-after":
		return 53, 0
	case "server":
		return 54, 0
	case "set-cookie":
		return 55, 0
	case "strict-transport-security":
		return 56, 0
	case "transfer-encoding":
		return 57, 0
	case "user-agent":
		return 58, 0
	case "vary":
		return 59, 0
	case "via":
		return 60, 0
	case "www-authenticate":
		return 61, 0
	}
	return 0, 0
}
