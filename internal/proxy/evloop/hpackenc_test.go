package evloop

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// staticTableNames is RFC 7541 Appendix A's names, index i+1 at i, and
// staticTablePairs the entries that carry a value.
var (
	staticTableNames = strings.Fields(`:authority :method :method :path :path :scheme :scheme :status :status
		:status :status :status :status :status accept-charset accept-encoding accept-language accept-ranges
		accept access-control-allow-origin age allow authorization cache-control content-disposition
		content-encoding content-language content-length content-location content-range content-type cookie
		date etag expect expires from host if-match if-modified-since if-none-match if-range
		if-unmodified-since last-modified link location max-forwards proxy-authenticate proxy-authorization
		range referer refresh retry-after server set-cookie strict-transport-security transfer-encoding
		user-agent vary via www-authenticate`)
	staticTablePairs = map[int]string{2: "GET", 3: "POST", 4: "/", 5: "/index.html", 6: "http", 7: "https",
		8: "200", 9: "204", 10: "206", 11: "304", 12: "400", 13: "404", 14: "500", 16: "gzip, deflate"}
)

// decodeBlock decodes one header block with a decoder of its own: a block
// that needed an earlier one's table would fail or differ here.
func decodeBlock(t testing.TB, block []byte) []hpack.HeaderField {
	t.Helper()
	fs, err := hpack.NewDecoder(4096, nil).DecodeFull(block)
	if err != nil {
		t.Fatalf("x/net's decoder refuses %x: %v", block, err)
	}
	return fs
}

// settledEnc is an encoder whose peer's SETTINGS came.
func settledEnc() *hpackEnc {
	e := newHPACKEnc(new(bytes.Buffer))
	e.PeerSettled()
	return e
}

func encodeBlock(e *hpackEnc, fs []hpack.HeaderField) []byte {
	e.w.Reset()
	for _, f := range fs {
		_ = e.WriteField(f)
	}
	return bytes.Clone(e.w.Bytes())
}

// TestHPACKEncStaticTable: every name of the static table, with its own
// value and another, decodes to itself; a pair the table holds whole is
// one byte, its index; a name it holds is sent as its index, in a literal
// added to the dynamic table unless its values are new with every
// request.
func TestHPACKEncStaticTable(t *testing.T) {
	if len(staticTableNames) != 61 {
		t.Fatalf("the table has 61 entries, the test %d", len(staticTableNames))
	}
	for i, name := range staticTableNames {
		idx := i + 1
		if v, ok := staticTablePairs[idx]; ok {
			f := hpack.HeaderField{Name: name, Value: v}
			b := encodeBlock(settledEnc(), []hpack.HeaderField{f})
			if !bytes.Equal(b, []byte{0x80 | byte(idx)}) {
				t.Errorf("%s: %s is %x, want the index %d alone", name, v, b, idx)
			}
			if got := decodeBlock(t, b); !reflect.DeepEqual(got, []hpack.HeaderField{f}) {
				t.Errorf("%s: %s decodes to %v", name, v, got)
			}
		}
		f := hpack.HeaderField{Name: name, Value: "x-other"}
		b := encodeBlock(settledEnc(), []hpack.HeaderField{f})
		for idx > 1 && staticTableNames[idx-2] == name { // :method and others name several entries: the first
			idx--
		}
		want := hpackString(hpackInt(nil, 0x40, 6, uint64(idx)), "x-other")
		if hpackUnique(name) {
			want = hpackString(hpackInt(nil, 0, 4, uint64(idx)), "x-other")
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s: %x, want the name's index %d: %x", name, b, idx, want)
		}
		if got := decodeBlock(t, b); !reflect.DeepEqual(got, []hpack.HeaderField{f}) {
			t.Errorf("%s decodes to %v", name, got)
		}
	}
}

// TestHPACKEncRoundTrip: random blocks (names of the static table, a few
// that repeat, and others; empty, short and long strings; sensitive
// fields) decode to what was encoded by one decoder that keeps its table
// from block to block, as a peer's does, while the peer's table limit
// moves now and then. Every 25 blocks a probe of five small fields goes
// twice: with the table at 1,000 bytes or more, the second time is five
// one-byte indexes into the dynamic table.
func TestHPACKEncRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	str := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Intn(256))
		}
		return string(b)
	}
	var repeated []hpack.HeaderField
	for i := range 40 {
		repeated = append(repeated, hpack.HeaderField{Name: fmt.Sprintf("x-r%d", i%25), Value: str(rng.Intn(3) * rng.Intn(400))})
	}
	e := settledEnc()
	d := hpack.NewDecoder(4096, nil)
	probe := make([]hpack.HeaderField, 5)
	for i := range probe {
		probe[i] = hpack.HeaderField{Name: fmt.Sprintf("x-p%d", i), Value: fmt.Sprintf("v%d", i)}
	}
	probes := 0
	for blk := range 3000 {
		if rng.Intn(50) == 0 {
			limit := []uint32{0, 31, 64, 100, 1000, 4096, 8192, 65536}[rng.Intn(8)]
			e.SetMaxDynamicTableSizeLimit(limit)
			d.SetAllowedMaxDynamicTableSize(limit)
			if rng.Intn(2) == 0 { // a second SETTINGS before the next block
				limit = []uint32{0, 100, 4096}[rng.Intn(3)]
				e.SetMaxDynamicTableSizeLimit(limit)
				d.SetAllowedMaxDynamicTableSize(limit)
			}
		}
		fs := make([]hpack.HeaderField, rng.Intn(12))
		for i := range fs {
			f := &fs[i]
			if rng.Intn(2) == 0 {
				*f = repeated[rng.Intn(len(repeated))]
				continue
			}
			switch rng.Intn(3) {
			case 0:
				f.Name = staticTableNames[rng.Intn(61)]
			case 1:
				f.Name = "x-" + str(rng.Intn(20))
			default:
				f.Name = str(rng.Intn(300))
			}
			switch rng.Intn(4) {
			case 0:
				f.Value = staticTablePairs[rng.Intn(17)]
			case 1:
				f.Value = str(rng.Intn(10))
			case 2:
				f.Value = str(120 + rng.Intn(20000))
			default:
				f.Value = ""
			}
			f.Sensitive = rng.Intn(5) == 0
		}
		b := encodeBlock(e, fs)
		got, err := d.DecodeFull(b)
		if err != nil || len(fs) > 0 && !reflect.DeepEqual(got, fs) || len(got) != len(fs) {
			t.Fatalf("block %d: %d fields encoded in %d bytes, %d decoded: %v", blk, len(fs), len(b), len(got), err)
		}
		if blk%25 != 0 {
			continue
		}
		for i := range 2 {
			b := encodeBlock(e, probe)
			if got, err := d.DecodeFull(b); err != nil || !reflect.DeepEqual(got, probe) {
				t.Fatalf("probe after block %d: decoded %q, %v", blk, got, err)
			}
			if i == 1 && e.max >= 1000 {
				probes++
				if !bytes.Equal(b, []byte{0x80 | 66, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62}) {
					t.Fatalf("probe after block %d, sent again: %x, want the five newest dynamic indexes", blk, b)
				}
			}
		}
	}
	if probes < 20 {
		t.Fatalf("%d probes with the table at 1,000 bytes or more", probes)
	}
}

// TestHPACKEncTable: what a connection repeats crosses it once. The
// second request's block is the first's indexes, but for x-request-id,
// which is new each time: its value is sent, its name is an index; a 1 KB
// token is sent once; a sensitive field is never added.
func TestHPACKEncTable(t *testing.T) {
	e := settledEnc()
	d := hpack.NewDecoder(4096, nil)
	token := strings.Repeat("t", 1024)
	req := append(slices.Clone(proxiedBlocks[0]), hpack.HeaderField{Name: "authorization", Value: "Bearer " + token},
		hpack.HeaderField{Name: "cookie", Value: "s=secret", Sensitive: true})
	var sizes []int
	for i := range 3 {
		req[6].Value = fmt.Sprintf("8c1f5a53-0d6b-4f3c-9b7e-2a4d1e6f9c0%d", i) // x-request-id
		b := encodeBlock(e, req)
		if got, err := d.DecodeFull(b); err != nil || !reflect.DeepEqual(got, req) {
			t.Fatalf("request %d decoded %q, %v", i, got, err)
		}
		sizes = append(sizes, len(b))
		if i > 0 && (!bytes.Contains(b, []byte(req[6].Value)) || !bytes.Contains(b, []byte("s=secret"))) {
			t.Errorf("request %d: x-request-id or the sensitive cookie not sent as a literal: %x", i, b)
		}
	}
	// Later: 8 one-byte indexes; x-request-id as a literal with its
	// name's dynamic index (added with the first request; two bytes with
	// a 4-bit prefix); the cookie as a never-indexed literal with its
	// name's static index (32, two bytes too).
	want := 8 + (2 + 1 + 36) + (2 + 1 + len("s=secret"))
	if sizes[0] < 1100 || sizes[1] != want || sizes[2] != want {
		t.Fatalf("request blocks of %v bytes, want over 1,100 then %d", sizes, want)
	}
}

// TestHPACKEncBeforeSettings: until the peer's SETTINGS came, nothing is
// added to the table, so a decoder that holds a table of 1 byte from the
// connection's start (x/net's server with MaxDecoderHeaderTableSize 1)
// takes the blocks; after them, the first block adds its fields.
func TestHPACKEncBeforeSettings(t *testing.T) {
	e := newHPACKEnc(new(bytes.Buffer))
	d := hpack.NewDecoder(1, nil)
	blk := proxiedBlocks[0]
	first := encodeBlock(e, blk)
	for i := range 3 {
		b := encodeBlock(e, blk)
		if got, err := d.DecodeFull(b); err != nil || !reflect.DeepEqual(got, blk) || !bytes.Equal(b, first) {
			t.Fatalf("block %d before SETTINGS: %x decoded %q, %v", i, b, got, err)
		}
	}
	e.PeerSettled()
	d = hpack.NewDecoder(4096, nil)
	for i := range 2 {
		b := encodeBlock(e, blk)
		if got, err := d.DecodeFull(b); err != nil || !reflect.DeepEqual(got, blk) {
			t.Fatalf("block %d after SETTINGS: decoded %q, %v", i, got, err)
		}
		if i == 1 && len(b) >= len(first)/2 {
			t.Errorf("the second block after SETTINGS is %d bytes, the first before them %d: the table is not used", len(b), len(first))
		}
	}
}

// TestHPACKEncTableSizeUpdate: a peer's SETTINGS_HEADER_TABLE_SIZE that
// changes the table's size (up to 4,096) is answered at the start of the
// next block, and only there, with the new size, after a 0 when the
// limit dipped below it in between; one that leaves the size as it is
// hears nothing. x/net's decoder, which refuses a second update unless
// its table is empty, takes every block.
func TestHPACKEncTableSizeUpdate(t *testing.T) {
	e := settledEnc()
	d := hpack.NewDecoder(4096, nil)
	f := []hpack.HeaderField{{Name: ":status", Value: "200"}}
	for _, c := range []struct {
		limits  []uint32 // SETTINGS before the block
		updates []uint64 // the sizes the block starts with
	}{
		{[]uint32{8192}, nil},
		{[]uint32{4096}, nil},
		{[]uint32{0}, []uint64{0}},
		{[]uint32{100}, []uint64{100}},
		{[]uint32{50}, []uint64{50}},
		{[]uint32{10, 4096}, []uint64{0, 4096}},
		{[]uint32{65536}, nil},
		{[]uint32{1000, 65536}, []uint64{0, 4096}},
		{[]uint32{1000}, []uint64{1000}},
	} {
		for _, l := range c.limits {
			e.SetMaxDynamicTableSizeLimit(l)
			d.SetAllowedMaxDynamicTableSize(l)
		}
		var want []byte
		for _, u := range c.updates {
			want = hpackInt(want, 0x20, 5, u)
		}
		want = append(want, 0x88)
		b := encodeBlock(e, f)
		if !bytes.Equal(b, want) {
			t.Errorf("after limits %v: %x, want %x", c.limits, b, want)
		}
		if got, err := d.DecodeFull(b); err != nil || !reflect.DeepEqual(got, f) {
			t.Errorf("after limits %v: decoded %v, %v", c.limits, got, err)
		}
		if b := encodeBlock(e, f); !bytes.Equal(b, []byte{0x88}) {
			t.Errorf("the block after that: %x", b)
		}
	}
}

func FuzzHPACKEnc(f *testing.F) {
	f.Add(":path", "/index.html", "x-a", "", false, uint32(4096))
	f.Add("content-type", strings.Repeat("v", 200), "", "\x00\xff", true, uint32(100))
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string, sensitive bool, limit uint32) {
		fs := []hpack.HeaderField{{Name: n1, Value: v1, Sensitive: sensitive}, {Name: n2, Value: v2}}
		e := newHPACKEnc(new(bytes.Buffer))
		d := hpack.NewDecoder(4096, nil)
		for i := range 4 { // before the peer's SETTINGS, after (the table's entries used), the limit set before the last
			if i == 1 {
				e.PeerSettled()
			}
			if i == 3 {
				e.SetMaxDynamicTableSizeLimit(limit)
				d.SetAllowedMaxDynamicTableSize(limit)
			}
			if got, err := d.DecodeFull(encodeBlock(e, fs)); err != nil || !reflect.DeepEqual(got, fs) {
				t.Fatalf("block %d: encoded %q, decoded %q, %v", i, fs, got, err)
			}
		}
	})
}

// proxiedBlocks are the header blocks of one proxied h2c request and its
// response as the loops send them (request upstream, response downstream).
var proxiedBlocks = [][]hpack.HeaderField{
	{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "server.bench.local:8080"},
		{Name: ":path", Value: "/"}, {Name: "user-agent", Value: "h2load nghttp2/1.52.0"},
		{Name: "x-forwarded-proto", Value: "http"}, {Name: "x-request-id", Value: "8c1f5a53-0d6b-4f3c-9b7e-2a4d1e6f9c01"},
		{Name: "x-envoy-expected-rq-timeout-ms", Value: "15000"}},
	{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "content-length", Value: "2"}, {Name: "date", Value: "Fri, 04 Dec 2026 16:00:00 GMT"},
		{Name: "server", Value: "envoy"}, {Name: "x-envoy-upstream-service-time", Value: "0"}},
}

// BenchmarkHPACKEncode: x/net's Encoder (dynamic table) against hpackEnc,
// one connection's encoder for many requests, as the loops use them; each
// request with an x-request-id of its own.
func BenchmarkHPACKEncode(b *testing.B) {
	var buf bytes.Buffer
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("8c1f5a53-0d6b-4f3c-9b7e-2a4d1e6f%04x", i)
	}
	run := func(b *testing.B, write func(hpack.HeaderField) error) {
		b.ReportAllocs()
		n := 0
		for i := range b.N {
			for _, blk := range proxiedBlocks {
				buf.Reset()
				for _, f := range blk {
					if f.Name == "x-request-id" {
						f.Value = ids[i%len(ids)]
					}
					_ = write(f)
				}
				n += buf.Len()
			}
		}
		b.ReportMetric(float64(n)/float64(b.N), "bytes/request")
	}
	b.Run("x-net", func(b *testing.B) { run(b, hpack.NewEncoder(&buf).WriteField) })
	b.Run("table", func(b *testing.B) {
		e := newHPACKEnc(&buf)
		e.PeerSettled()
		run(b, e.WriteField)
	})
}
