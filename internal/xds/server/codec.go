package server

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// A state-of-the-world response that carries every resource of a type is
// encoded by appendResponse from the type's entries, whose resources are
// encoded already: no DiscoveryResponse is built, and proto's size and
// marshal passes are not run. For the replicas of an identity it is
// encoded once without its nonce (fullResponse.body), and each stream
// sends those bytes followed by its nonce's field: protobuf's encoding of
// a message is the concatenation of its fields'. A lone stream's is
// encoded as it is sent, nonce included, into one buffer of gRPC's pool.
// The gRPC server's codec passes such a preEncoded through and encodes
// everything else as the proto codec does; compression, when a client
// asks for it, applies to the bytes as usual. Either way gRPC copies the
// bytes once more, into its connection's write buffer.

// preEncoded is a DiscoveryResponse carrying every resource of ts, of
// type typ: encoded but for its nonce (body, shared and only read), or to
// be encoded from ts when body is nil.
type preEncoded struct {
	body  []byte
	ts    *typeSnapshot
	typ   int
	nonce string
}

// set reports whether p holds a response.
func (p *preEncoded) set() bool { return p.ts != nil }

// DiscoveryResponse's and Any's field numbers: wire constants of the xDS
// and protobuf APIs (TestFieldNumbers compares them with the
// descriptors). Read from the descriptors at package initialisation,
// they made every process of the weft binary, weft proxy's included,
// build both files' descriptors at start-up: 46 KB and 160 allocations of
// the 3.8 MB weft's initialisation allocates (GODEBUG=inittrace=1;
// docs/bench/proxy.md, "Memory: h2c and weft proxy with mTLS").
const (
	versionField   protowire.Number = 1 // DiscoveryResponse.version_info
	resourcesField protowire.Number = 2 // DiscoveryResponse.resources
	typeURLField   protowire.Number = 4 // DiscoveryResponse.type_url
	nonceField     protowire.Number = 5 // DiscoveryResponse.nonce
	anyTypeField   protowire.Number = 1 // Any.type_url
	anyValueField  protowire.Number = 2 // Any.value
)

// responseSize is the length of appendResponse's encoding.
func responseSize(ts *typeSnapshot, typ int, nonce string) int {
	n := stringSize(versionField, ts.version) + stringSize(typeURLField, typeURL(typ))
	if nonce != "" {
		n += stringSize(nonceField, nonce)
	}
	for _, e := range ts.entries {
		n += protowire.SizeTag(resourcesField) + protowire.SizeBytes(anySize(e.any))
	}
	return n
}

func stringSize(f protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(f) + protowire.SizeBytes(len(s))
}

func anySize(a *anypb.Any) int {
	n := stringSize(anyTypeField, a.GetTypeUrl())
	if len(a.GetValue()) > 0 {
		n += protowire.SizeTag(anyValueField) + protowire.SizeBytes(len(a.GetValue()))
	}
	return n
}

// appendResponse appends the encoding of the DiscoveryResponse carrying
// every resource of ts, with nonce when not "": the bytes proto.Marshal
// gives for it (fields in number order, empty ones left out;
// TestAppendResponseIsProtos).
func appendResponse(b []byte, ts *typeSnapshot, typ int, nonce string) []byte {
	b = appendString(b, versionField, ts.version)
	for _, e := range ts.entries {
		b = protowire.AppendTag(b, resourcesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(anySize(e.any)))
		b = appendString(b, anyTypeField, e.any.GetTypeUrl())
		if v := e.any.GetValue(); len(v) > 0 {
			b = protowire.AppendTag(b, anyValueField, protowire.BytesType)
			b = protowire.AppendBytes(b, v)
		}
	}
	b = appendString(b, typeURLField, typeURL(typ))
	return appendString(b, nonceField, nonce)
}

func appendString(b []byte, f protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, f, protowire.BytesType), s)
}

// xdsCodec is the gRPC codec of the xDS server: proto's, and preEncoded
// messages as they are.
type xdsCodec struct{ proto encoding.CodecV2 }

func newCodec() (xdsCodec, error) {
	c := encoding.GetCodecV2("proto")
	if c == nil {
		return xdsCodec{}, fmt.Errorf("no proto codec registered")
	}
	return xdsCodec{proto: c}, nil
}

func (c xdsCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*preEncoded)
	switch {
	case !ok:
		return c.proto.Marshal(v)
	case p.body != nil:
		n := appendString(make([]byte, 0, 2+len(p.nonce)), nonceField, p.nonce)
		return mem.BufferSlice{mem.SliceBuffer(p.body), mem.SliceBuffer(n)}, nil
	}
	size := responseSize(p.ts, p.typ, p.nonce)
	if mem.IsBelowBufferPoolingThreshold(size) {
		return mem.BufferSlice{mem.SliceBuffer(appendResponse(make([]byte, 0, size), p.ts, p.typ, p.nonce))}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	*buf = appendResponse((*buf)[:0], p.ts, p.typ, p.nonce)
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes a state-of-the-world stream's request with
// decodeRequest (decode.go), anything else as the proto codec does.
func (c xdsCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*sotwRecv)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if len(data) == 1 {
		// Read in place: the strings decodeRequest keeps are copies.
		return r.decode(data[0].ReadOnlyData())
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return r.decode(buf.ReadOnlyData())
}

// Name is proto's: the content type stays application/grpc+proto.
func (c xdsCodec) Name() string { return c.proto.Name() }
