package server

import (
	"bytes"
	"slices"
	"sync"
	"unicode/utf8"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Most requests a state-of-the-world stream receives are ACKs: the same
// type URL and resource names as the stream's previous request of the
// type, a new version and nonce, and (Envoy's default) the node again.
// Decoding one with proto's Unmarshal allocates every string and the
// whole node each time. decodeRequest reads only the fields the server
// reads (version_info, node, resource_names, type_url, response_nonce,
// error_detail), keeps the strings the message already holds when the new
// bytes are the same (a type URL is one of the served types' constants),
// and does not decode a node that is, byte for byte, the one the stream
// was identified by. Anything
// else (resource locators, unknown fields, a field of an unexpected wire
// type or repeated where proto would merge, invalid UTF-8, a malformed
// encoding) is left to proto's ordinary decode, so that the result is
// always what proto.Unmarshal gives (less the node, when skipped).
//
// Measured (BenchmarkDecodeACK, an Envoy-like ACK: the node with metadata,
// locality, build version and 80 extensions, as Envoy repeats it in every
// request by default; 2 vCPU, load 4.5, 2026-12-03): proto.Unmarshal
// 73-93 µs, 471 allocations, 26 KB per ACK; decodeRequest 0.34-0.40 µs and
// none. In xdsbench, whose proxies send their node once, the difference
// was not separable from the noise (docs/bench/xds.md).

// sotwRecv is what a state-of-the-world stream receives into when the
// server's codec is xdsCodec.
type sotwRecv struct {
	req *discovery.DiscoveryRequest
	// skipNode: the stream is identified; a node the request repeats
	// byte for byte (node) is not decoded (req.Node is left nil). Both
	// are written between two receives, on the receiving goroutine.
	skipNode bool
	node     []byte // the encoding of the first node decoded
	// mu protects sent: the version and nonce last sent of each type,
	// which an ACK repeats, set by the stream as it sends (serve's push)
	// while a receive may be decoding.
	mu   sync.Mutex
	sent [numTypes]sentPair
}

// sentPair is the version and nonce of a type's last response.
type sentPair struct{ version, nonce string }

// setSent records the version and nonce last sent of each type.
func (r *sotwRecv) setSent(s *stream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t := range numTypes {
		r.sent[t] = sentPair{s.types[t].sentVersion, s.types[t].sentNonce}
	}
}

// decode decodes b into r.req.
func (r *sotwRecv) decode(b []byte) error {
	var known []byte
	if r.skipNode {
		known = r.node
	}
	r.mu.Lock()
	node, err := decodeRequest(b, r.req, known, &r.sent)
	r.mu.Unlock()
	if err == nil && r.node == nil && r.req.Node != nil && node != nil {
		r.node = slices.Clone(node) // decoded: a valid node
	}
	return err
}

// DiscoveryRequest's field numbers.
const (
	reqVersionField   protowire.Number = 1
	reqNodeField      protowire.Number = 2
	reqNamesField     protowire.Number = 3
	reqTypeField      protowire.Number = 4
	reqNonceField     protowire.Number = 5
	reqErrDetailField protowire.Number = 6
)

// decodeRequest decodes b into req (replacing every field, as
// proto.Unmarshal does), reusing its strings, or the version and nonce
// last sent of the request's type (sent, nil: none), where the bytes are
// the same. A node encoded as known (a node decoded before; nil: none) is
// not decoded: req.Node is left nil. node is the node's encoding, a part
// of b, when decodeRequest read it (not proto.Unmarshal).
func decodeRequest(b []byte, req *discovery.DiscoveryRequest, known []byte, sent *[numTypes]sentPair) (node []byte, err error) {
	var version, nonce, typeURL, errDetail []byte
	var seenNode, seenErr bool
	oldNames := req.ResourceNames
	names := oldNames[:0]
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || typ != protowire.BytesType {
			return nil, fallback(b, req)
		}
		rest = rest[n:]
		v, n := protowire.ConsumeBytes(rest)
		if n < 0 {
			return nil, fallback(b, req)
		}
		rest = rest[n:]
		switch num {
		case reqVersionField:
			version = v
		case reqNonceField:
			nonce = v
		case reqTypeField:
			typeURL = v
		case reqNamesField:
			if !utf8.Valid(v) {
				return nil, fallback(b, req)
			}
			i := len(names)
			if i < len(oldNames) && oldNames[i] == string(v) {
				names = append(names, oldNames[i])
			} else {
				names = append(names, string(v))
			}
		case reqNodeField:
			if seenNode {
				return nil, fallback(b, req) // proto merges the two
			}
			seenNode, node = true, v
		case reqErrDetailField:
			if seenErr {
				return nil, fallback(b, req)
			}
			seenErr, errDetail = true, v
		default:
			return nil, fallback(b, req)
		}
	}
	if !utf8.Valid(version) || !utf8.Valid(nonce) || !utf8.Valid(typeURL) {
		return nil, fallback(b, req)
	}
	var n *core.Node
	if seenNode && (known == nil || !bytes.Equal(node, known)) {
		n = new(core.Node)
		if err := proto.Unmarshal(node, n); err != nil {
			return nil, fallback(b, req)
		}
	}
	var ed *rpcstatus.Status
	if seenErr {
		ed = new(rpcstatus.Status)
		if err := proto.Unmarshal(errDetail, ed); err != nil {
			return nil, fallback(b, req)
		}
	}
	was := sentPair{req.VersionInfo, req.ResponseNonce}
	req.Reset()
	req.TypeUrl = typeURLOf(typeURL)
	if t := typeIndex(req.TypeUrl); t >= 0 && sent != nil {
		// An ACK repeats what it acknowledges.
		was = sent[t]
	}
	req.VersionInfo = sameString(version, was.version)
	req.ResponseNonce = sameString(nonce, was.nonce)
	if len(names) > 0 {
		req.ResourceNames = names
	}
	req.Node, req.ErrorDetail = n, ed
	return node, nil
}

// fallback is proto's ordinary decode.
func fallback(b []byte, req *discovery.DiscoveryRequest) error {
	return proto.Unmarshal(b, req)
}

// sameString is string(b), old when they are equal.
func sameString(b []byte, old string) string {
	if old == string(b) {
		return old
	}
	return string(b)
}

// typeURLOf is string(b), a constant for the types weft serves.
func typeURLOf(b []byte) string {
	switch string(b) {
	case resource.ClusterType:
		return resource.ClusterType
	case resource.EndpointType:
		return resource.EndpointType
	case resource.ListenerType:
		return resource.ListenerType
	case resource.RouteType:
		return resource.RouteType
	case resource.SecretType:
		return resource.SecretType
	}
	return string(b)
}
