package evloop

import (
	"bytes"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// hpackEnc encodes the header blocks the loops send (RFC 7541) with a
// small dynamic table searched by a scan, not by hashing: a field the
// static table holds whole is its index, one the dynamic table holds is
// its index there, and any other is a literal, added to the dynamic
// table unless it is sensitive, too large, or of a name whose value is
// new with every request (hpackUnique: added once, for the name's index).
// Strings are not Huffman-coded.
//
// Measured, not assumed (docs/bench/proxy.md, "HPACK without the dynamic
// table" and "HPACK with a small table"): x/net's Encoder, which searches
// its table through two maps for every field, was 10 % of a proxy's CPU
// at h2c saturation. Without any table (round 15), the two blocks of a
// proxied request and its response took about 190 ns, but sent 271 bytes,
// and a large token or cookie crossed each hop with every request. With
// this table, scanned (a dozen entries, for a connection that carries one
// service's requests), they take about 330 ns and 51 bytes, against
// x/net's 990 ns and 44 bytes (BenchmarkHPACKEncode, an x-request-id of
// its own per request; x/net Huffman-codes it).
type hpackEnc struct {
	w *bytes.Buffer
	// limit is the largest table the peer allows (its SETTINGS_HEADER_TABLE_SIZE,
	// 4096 until it says); low, the smallest it allowed since the last
	// block; update, that the next block must start by telling the peer
	// the table's new size (RFC 7541 4.2).
	limit, low uint32
	update     bool
	// settled: the peer's first SETTINGS came. Nothing is added to the
	// table before: a decoder may hold its advertised limit from the
	// connection's start, not from its SETTINGS' acknowledgement (x/net's
	// server does), and an upstream's SETTINGS can come after the first
	// request.
	settled bool
	// The dynamic table: max is its size limit as the peer last heard it
	// (at most hpackTableSize), size the sum of its entries' sizes (RFC
	// 7541 4.1), ents a ring of its n entries from the oldest at first.
	max, size uint32
	ents      []hpackEntry
	first, n  int
}

type hpackEntry struct{ name, value string }

const (
	// hpackTableSize is the dynamic table's size when the peer allows it:
	// RFC 7541's default, which a peer's decoder allows without a word.
	hpackTableSize = 4096
	// hpackEntries is the ring's first size, made at the first field
	// added: 512 bytes, which a request's and a response's repeated
	// fields fit in; it doubles when full.
	hpackEntries = 16
)

func newHPACKEnc(w *bytes.Buffer) *hpackEnc {
	return &hpackEnc{w: w, limit: 4096, low: 4096, max: hpackTableSize}
}

// SetMaxDynamicTableSizeLimit takes the peer's SETTINGS_HEADER_TABLE_SIZE.
// The table's size follows it up to hpackTableSize: the next block starts
// by telling the peer (a decoder whose limit went below the size it last
// heard of waits for that).
func (e *hpackEnc) SetMaxDynamicTableSizeLimit(v uint32) {
	e.limit = v
	e.low = min(e.low, v)
	e.update = e.update || e.low < e.max || min(v, hpackTableSize) != e.max
}

// PeerSettled notes that the peer's SETTINGS came: fields are added to
// the table from the next one on.
func (e *hpackEnc) PeerSettled() { e.settled = true }

// sizeUpdate starts a block with the size updates (RFC 7541 4.2): the
// table's new size, after a signal of 0 when the limit dipped below it
// since the last block. RFC 7541 lets that signal be the smallest limit
// seen; x/net's decoder (Go's and grpc-go's HTTP/2) takes a second update
// in a block only with its table empty, so the dip empties it.
func (e *hpackEnc) sizeUpdate(b []byte) []byte {
	e.update = false
	m := min(e.limit, hpackTableSize)
	if e.low < e.max && e.low < m {
		e.evict(0)
		e.max = 0
		b = hpackInt(b, 0x20, 5, 0)
	}
	if m != e.max {
		e.evict(m)
		e.max = m
		b = hpackInt(b, 0x20, 5, uint64(m))
	}
	e.low = e.limit
	return b
}

// WriteField appends f's representation to the block being encoded; it
// never fails (the error is hpack.Encoder's signature).
func (e *hpackEnc) WriteField(f hpack.HeaderField) error {
	b := e.w.AvailableBuffer()
	if e.update {
		b = e.sizeUpdate(b)
	}
	name, whole := staticIndex(f.Name, f.Value)
	if whole != 0 && !f.Sensitive {
		b = hpackInt(b, 0x80, 7, uint64(whole)) // indexed field
		_, _ = e.w.Write(b)
		return nil
	}
	var dname int
	if e.n > 0 && !f.Sensitive {
		var dwhole int
		dname, dwhole = e.find(f.Name, f.Value)
		if dwhole != 0 {
			b = hpackInt(b, 0x80, 7, uint64(dwhole))
			_, _ = e.w.Write(b)
			return nil
		}
	}
	nameIdx := uint64(name)
	if name == 0 {
		nameIdx = uint64(dname)
	}
	switch size := uint32(len(f.Name) + len(f.Value) + 32); {
	case f.Sensitive:
		b = hpackInt(b, 0x10, 4, nameIdx) // literal, never indexed
	case e.settled && size <= e.max/2 && (nameIdx == 0 || !hpackUnique(f.Name)):
		// Literal, added to the table; a name whose values do not repeat
		// only once, for its name's index.
		b = hpackInt(b, 0x40, 6, nameIdx)
		e.add(f.Name, f.Value, size)
	default:
		b = hpackInt(b, 0x00, 4, nameIdx) // literal, not indexed
	}
	if nameIdx == 0 {
		b = hpackString(b, f.Name)
	}
	b = hpackString(b, f.Value)
	_, _ = e.w.Write(b)
	return nil
}

// find returns the dynamic table's index of the newest entry named name
// (0 if none) and of one that is name and value (0 if none).
func (e *hpackEnc) find(name, value string) (nameIdx, whole int) {
	for k := range e.n { // k = 0 is the newest, index 62
		en := &e.ents[(e.first+e.n-1-k)%len(e.ents)]
		if len(en.name) != len(name) || en.name != name {
			continue
		}
		if len(en.value) == len(value) && en.value == value {
			return 62 + k, 62 + k
		}
		if nameIdx == 0 {
			nameIdx = 62 + k
		}
	}
	return nameIdx, 0
}

// add puts a field in the table as the peer's decoder does, the oldest
// entries evicted until it fits (size is at most half the table's). The
// ring grows when full, to hpackTableSize/32 entries at most, which is as
// many as the table can hold; the table keeps copies of the strings.
func (e *hpackEnc) add(name, value string, size uint32) {
	e.evict(e.max - size)
	if e.n == len(e.ents) {
		ents := make([]hpackEntry, max(hpackEntries, 2*len(e.ents)))
		for k := range e.n {
			ents[k] = e.ents[(e.first+k)%len(e.ents)]
		}
		e.ents, e.first = ents, 0
	}
	// One copy of both (not name + value, which may return name itself
	// and so makes every caller's strings escape).
	var sb strings.Builder
	sb.Grow(len(name) + len(value))
	sb.WriteString(name)
	sb.WriteString(value)
	nv := sb.String()
	e.ents[(e.first+e.n)%len(e.ents)] = hpackEntry{nv[:len(name)], nv[len(name):]}
	e.n++
	e.size += size
}

// evict drops the oldest entries until the table's size is at most to.
func (e *hpackEnc) evict(to uint32) {
	for e.size > to {
		en := &e.ents[e.first]
		e.size -= uint32(len(en.name) + len(en.value) + 32)
		*en = hpackEntry{}
		e.first = (e.first + 1) % len(e.ents)
		e.n--
	}
}

// hpackUnique reports names whose values are new with every request (an
// ID): added to the table they would only push out the fields that
// repeat, and cost a copy each. A date, a content length or an upstream
// service time repeats often enough to be kept.
func hpackUnique(name string) bool {
	switch name {
	case "x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
		"x-amzn-trace-id", "grpc-timeout":
		return true
	}
	return false
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
