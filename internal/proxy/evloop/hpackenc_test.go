package evloop

import (
	"bytes"
	"math/rand"
	"reflect"
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

func encodeBlock(e *hpackEnc, fs []hpack.HeaderField) []byte {
	e.w.Reset()
	for _, f := range fs {
		_ = e.WriteField(f)
	}
	return bytes.Clone(e.w.Bytes())
}

// TestHPACKEncStaticTable: every name of the static table, with its own
// value and another, decodes to itself; a pair the table holds whole is
// one byte, its index; a name it holds is sent as its index.
func TestHPACKEncStaticTable(t *testing.T) {
	if len(staticTableNames) != 61 {
		t.Fatalf("the table has 61 entries, the test %d", len(staticTableNames))
	}
	e := newHPACKEnc(new(bytes.Buffer))
	for i, name := range staticTableNames {
		idx := i + 1
		if v, ok := staticTablePairs[idx]; ok {
			f := hpack.HeaderField{Name: name, Value: v}
			b := encodeBlock(e, []hpack.HeaderField{f})
			if !bytes.Equal(b, []byte{0x80 | byte(idx)}) {
				t.Errorf("%s: %s is %x, want the index %d alone", name, v, b, idx)
			}
			if got := decodeBlock(t, b); !reflect.DeepEqual(got, []hpack.HeaderField{f}) {
				t.Errorf("%s: %s decodes to %v", name, v, got)
			}
		}
		f := hpack.HeaderField{Name: name, Value: "x-other"}
		b := encodeBlock(e, []hpack.HeaderField{f})
		for idx > 1 && staticTableNames[idx-2] == name { // :method and others name several entries: the first
			idx--
		}
		want := hpackString(hpackInt(nil, 0, 4, uint64(idx)), "x-other")
		if !bytes.Equal(b, want) {
			t.Errorf("%s: %x, want the name's index %d: %x", name, b, idx, want)
		}
		if got := decodeBlock(t, b); !reflect.DeepEqual(got, []hpack.HeaderField{f}) {
			t.Errorf("%s decodes to %v", name, got)
		}
	}
}

// TestHPACKEncRoundTrip: random blocks (names of the table and others,
// empty and long strings, sensitive fields) decode to what was encoded,
// each block by itself.
func TestHPACKEncRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	str := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Intn(256))
		}
		return string(b)
	}
	e := newHPACKEnc(new(bytes.Buffer))
	for range 2000 {
		fs := make([]hpack.HeaderField, rng.Intn(12))
		for i := range fs {
			f := &fs[i]
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
		if got := decodeBlock(t, encodeBlock(e, fs)); len(fs) > 0 && !reflect.DeepEqual(got, fs) || len(got) != len(fs) {
			t.Fatalf("encoded %q, decoded %q", fs, got)
		}
	}
}

// TestHPACKEncTableSizeUpdate: a peer that lowers SETTINGS_HEADER_TABLE_SIZE
// hears, at the start of the next block and only there, that our table is
// empty; one that raises it or keeps it hears nothing.
func TestHPACKEncTableSizeUpdate(t *testing.T) {
	e := newHPACKEnc(new(bytes.Buffer))
	f := []hpack.HeaderField{{Name: ":status", Value: "200"}}
	for _, c := range []struct {
		limit  uint32
		update bool
	}{{8192, false}, {4096, true}, {4096, false}, {0, true}, {100, false}, {50, true}} {
		e.SetMaxDynamicTableSizeLimit(c.limit)
		b := encodeBlock(e, f)
		want := []byte{0x88}
		if c.update {
			want = []byte{0x20, 0x88}
		}
		if !bytes.Equal(b, want) {
			t.Errorf("after a limit of %d: %x, want %x", c.limit, b, want)
		}
		d := hpack.NewDecoder(4096, nil)
		d.SetAllowedMaxDynamicTableSize(c.limit)
		if got, err := d.DecodeFull(b); err != nil || !reflect.DeepEqual(got, f) {
			t.Errorf("after a limit of %d: decoded %v, %v", c.limit, got, err)
		}
		if b := encodeBlock(e, f); !bytes.Equal(b, []byte{0x88}) {
			t.Errorf("the block after that: %x", b)
		}
	}
}

func FuzzHPACKEnc(f *testing.F) {
	f.Add(":path", "/index.html", "x-a", "", false)
	f.Add("content-type", strings.Repeat("v", 200), "", "\x00\xff", true)
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string, sensitive bool) {
		fs := []hpack.HeaderField{{Name: n1, Value: v1, Sensitive: sensitive}, {Name: n2, Value: v2}}
		if got := decodeBlock(t, encodeBlock(newHPACKEnc(new(bytes.Buffer)), fs)); !reflect.DeepEqual(got, fs) {
			t.Fatalf("encoded %q, decoded %q", fs, got)
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
// one connection's encoder for many requests, as the loops use them.
func BenchmarkHPACKEncode(b *testing.B) {
	var buf bytes.Buffer
	run := func(b *testing.B, write func(hpack.HeaderField) error) {
		b.ReportAllocs()
		n := 0
		for range b.N {
			for _, blk := range proxiedBlocks {
				buf.Reset()
				for _, f := range blk {
					_ = write(f)
				}
				n += buf.Len()
			}
		}
		b.ReportMetric(float64(n)/float64(b.N), "bytes/request")
	}
	b.Run("x-net", func(b *testing.B) { run(b, hpack.NewEncoder(&buf).WriteField) })
	b.Run("static", func(b *testing.B) { run(b, newHPACKEnc(&buf).WriteField) })
}
