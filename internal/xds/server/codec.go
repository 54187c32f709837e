package server

import (
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A state-of-the-world response that carries every resource of a type is
// the same for every stream of an identity but for its nonce (each
// stream's own, so that its ACKs match exactly). Its content is encoded
// once (fullResponse.body) and each stream sends those bytes followed by
// its nonce's field: protobuf's encoding of a message is the
// concatenation of its fields', in any order. The gRPC server's codec
// passes such a preEncoded through and encodes everything else as the
// proto codec does; compression, when a client asks for it, applies to
// the bytes as usual.

// preEncoded is a DiscoveryResponse encoded but for its nonce.
type preEncoded struct {
	body  []byte // the response without nonce, encoded; only read
	nonce string
}

// nonceField is DiscoveryResponse.nonce's field number.
var nonceField = protowire.Number((&discovery.DiscoveryResponse{}).ProtoReflect().Descriptor().Fields().ByName("nonce").Number())

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
	if p, ok := v.(*preEncoded); ok {
		n := protowire.AppendString(protowire.AppendTag(make([]byte, 0, 2+len(p.nonce)), nonceField, protowire.BytesType), p.nonce)
		return mem.BufferSlice{mem.SliceBuffer(p.body), mem.SliceBuffer(n)}, nil
	}
	return c.proto.Marshal(v)
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

// encodeBody encodes a response without its nonce.
func encodeBody(r *discovery.DiscoveryResponse) ([]byte, error) {
	return proto.Marshal(&discovery.DiscoveryResponse{VersionInfo: r.GetVersionInfo(), Resources: r.GetResources(), TypeUrl: r.GetTypeUrl()})
}
