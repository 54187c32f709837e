package server

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestDecodeRequestAgreesWithProto: decodeRequest gives what
// proto.Unmarshal gives (an error for the same inputs, the same message
// otherwise, less a node encoded as the known one) for random
// DiscoveryRequests, their encodings damaged, extended with fields it
// leaves to proto and with fields repeated, decoded one after the other
// into one message, as a stream does.
func TestDecodeRequestAgreesWithProto(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	var knowns [][]byte // nodes a stream may have been identified by
	for _, n := range randomNodes() {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		knowns = append(knowns, b)
	}
	var reused discovery.DiscoveryRequest
	var sent [numTypes]sentPair
	decoded, errs, skipped := 0, 0, 0
	for i := range 20000 {
		b := randomRequestBytes(rnd)
		var known []byte
		if rnd.IntN(2) == 0 {
			known = knowns[rnd.IntN(len(knowns))]
		}
		if rnd.IntN(2) == 0 {
			// The stream's last responses, which ACKs repeat.
			tt := rnd.IntN(numTypes)
			sent[tt] = sentPair{fmt.Sprintf("v%d", rnd.IntN(3)), fmt.Sprint(rnd.IntN(3))}
		}
		var want discovery.DiscoveryRequest
		wantErr := proto.Unmarshal(b, &want)
		_, gotErr := decodeRequest(b, &reused, known, &sent)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("request %d (%x): decodeRequest error %v, proto.Unmarshal error %v", i, b, gotErr, wantErr)
		}
		if wantErr != nil {
			errs++
			reused.Reset() // as after a failed RecvMsg: the stream ends
			continue
		}
		decoded++
		if reused.Node == nil && want.Node != nil {
			// Not decoded: it must be the known node.
			wb, err := proto.MarshalOptions{Deterministic: true}.Marshal(want.Node)
			if err != nil || known == nil || !bytes.Equal(wb, known) {
				t.Fatalf("request %d (%x): node %v not decoded; known %x", i, b, want.Node, known)
			}
			skipped++
			want.Node = nil
		}
		if !proto.Equal(&reused, &want) {
			t.Fatalf("request %d (%x), known node %x:\ndecodeRequest %v\nproto.Unmarshal %v", i, b, known, &reused, &want)
		}
	}
	if decoded < 10000 || errs == 0 || skipped == 0 {
		t.Fatalf("%d decoded, %d refused, %d known nodes skipped: the inputs are not varied enough", decoded, errs, skipped)
	}
}

// TestDecodeACKAllocatesNothing: an ACK of the last response, naming the
// resources the previous request named, repeating the node of a stream
// that knows it, is decoded without allocating.
func TestDecodeACKAllocatesNothing(t *testing.T) {
	node, err := proto.Marshal(&core.Node{Id: "sidecar~10.0.0.1~n~m", Cluster: "n", UserAgentName: "envoy"})
	if err != nil {
		t.Fatal(err)
	}
	var sent [numTypes]sentPair
	sent[typeRoute] = sentPair{"0123456789abcdef", "17"}
	ack := func(version, nonce string) []byte {
		var b []byte
		b = protowire.AppendTag(b, reqVersionField, protowire.BytesType)
		b = protowire.AppendString(b, version)
		b = protowire.AppendTag(b, reqNodeField, protowire.BytesType)
		b = protowire.AppendBytes(b, node)
		for _, n := range []string{"rds_egress_http_8080", "rds_ingress_http_9080"} {
			b = protowire.AppendTag(b, reqNamesField, protowire.BytesType)
			b = protowire.AppendString(b, n)
		}
		b = protowire.AppendTag(b, reqTypeField, protowire.BytesType)
		b = protowire.AppendString(b, resource.RouteType)
		b = protowire.AppendTag(b, reqNonceField, protowire.BytesType)
		return protowire.AppendString(b, nonce)
	}
	var req discovery.DiscoveryRequest
	if _, err := decodeRequest(ack("fedcba9876543210", "16"), &req, nil, &sent); err != nil {
		t.Fatal(err)
	}
	b := ack("0123456789abcdef", "17")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := decodeRequest(b, &req, node, &sent); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per ACK", allocs)
	}
	if req.GetVersionInfo() != "0123456789abcdef" || req.GetResponseNonce() != "17" || len(req.GetResourceNames()) != 2 || req.GetNode() != nil {
		t.Fatalf("decoded %v", &req)
	}
}

// randomNodes are the nodes randomRequestBytes draws from.
func randomNodes() []*core.Node {
	var out []*core.Node
	for _, id := range []string{"n1", "n2"} {
		for _, k := range []string{"x", "y"} {
			md, err := structpb.NewStruct(map[string]any{"k": k})
			if err != nil {
				panic(err)
			}
			out = append(out, &core.Node{Id: id, Cluster: "c", Metadata: md})
		}
	}
	return out
}

// randomRequestBytes is a random DiscoveryRequest's encoding, sometimes
// with fields decodeRequest leaves to proto (resource locators, unknown
// fields, another wire type), repeated ones, invalid UTF-8, or cut short.
func randomRequestBytes(rnd *rand.Rand) []byte {
	pick := func(s ...string) string { return s[rnd.IntN(len(s))] }
	r := &discovery.DiscoveryRequest{
		VersionInfo:   pick("", "v0", "v1", "v2", "0123456789abcdef"),
		ResponseNonce: pick("", "0", "1", "2", "17"),
		TypeUrl:       pick("", resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType, "type.googleapis.com/other"),
	}
	for range rnd.IntN(4) {
		r.ResourceNames = append(r.ResourceNames, pick("a", "b", "c", "*", ""))
	}
	if rnd.IntN(3) == 0 {
		nodes := randomNodes()
		r.Node = nodes[rnd.IntN(len(nodes))]
	}
	if rnd.IntN(5) == 0 {
		r.ErrorDetail = &rpcstatus.Status{Code: int32(rnd.IntN(3)), Message: pick("", "bad route")}
	}
	if rnd.IntN(10) == 0 {
		r.ResourceLocators = []*discovery.ResourceLocator{{Name: pick("a", "b")}}
	}
	b, err := proto.MarshalOptions{Deterministic: rnd.IntN(2) == 0}.Marshal(r)
	if err != nil {
		panic(err)
	}
	switch rnd.IntN(12) {
	case 0: // an unknown field
		b = protowire.AppendTag(b, 99, protowire.BytesType)
		b = protowire.AppendString(b, "x")
	case 1: // a known field number with another wire type
		b = protowire.AppendTag(b, reqVersionField, protowire.VarintType)
		b = protowire.AppendVarint(b, 7)
	case 2: // a string field again: the last one counts
		b = protowire.AppendTag(b, protowire.Number(1+rnd.IntN(5)/2*2), protowire.BytesType) // 1, 3 or 5
		b = protowire.AppendString(b, pick("v9", "z"))
	case 3: // a message field again: proto merges
		n, _ := proto.Marshal(&core.Node{Cluster: "merged"})
		b = protowire.AppendTag(b, reqNodeField, protowire.BytesType)
		b = protowire.AppendBytes(b, n)
	case 4: // invalid UTF-8 in a string
		b = protowire.AppendTag(b, protowire.Number(pick("1", "3", "4", "5")[0]-'0'), protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0xff, 0xfe})
	case 5: // cut short
		if len(b) > 0 {
			b = b[:rnd.IntN(len(b))]
		}
	case 6: // a damaged byte
		if len(b) > 0 {
			b[rnd.IntN(len(b))] ^= byte(1 + rnd.IntN(255))
		}
	case 7: // an error detail that is not one
		b = protowire.AppendTag(b, reqErrDetailField, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0x08})
	}
	return b
}

// envoyLikeNode is a node as Envoy sends it with every request by default
// (set_node_on_first_message_only is false): identity, metadata, locality,
// its build version and the list of extensions it was built with.
func envoyLikeNode() *core.Node {
	md, err := structpb.NewStruct(map[string]any{
		"APPMESH_RESOURCE_ARN":             "arn:aws:appmesh:us-east-1:111122223333:mesh/apps/virtualNode/colorteller-red",
		"aws.appmesh.task.interfaces.ipv4": []any{"10.0.1.17"},
		"aws.appmesh.platformInfo":         map[string]any{"ecs": map[string]any{"cluster": "apps"}},
	})
	if err != nil {
		panic(err)
	}
	n := &core.Node{
		Id:            "arn:aws:appmesh:us-east-1:111122223333:mesh/apps/virtualNode/colorteller-red",
		Cluster:       "colorteller-red",
		Metadata:      md,
		Locality:      &core.Locality{Region: "us-east-1", Zone: "us-east-1a"},
		UserAgentName: "envoy",
		UserAgentVersionType: &core.Node_UserAgentBuildVersion{UserAgentBuildVersion: &core.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 29, Patch: 4},
		}},
		ClientFeatures: []string{"envoy.lb.does_not_support_overprovisioning", "envoy.lrs.supports_send_all_clusters"},
	}
	for i := range 80 {
		n.Extensions = append(n.Extensions, &core.Extension{
			Name:     fmt.Sprintf("envoy.filters.http.extension_%d", i),
			Category: "envoy.filters.http",
			TypeUrls: []string{fmt.Sprintf("type.googleapis.com/envoy.extensions.filters.http.v3.Extension%d", i)},
		})
	}
	return n
}

// BenchmarkDecodeACK: an Envoy-like ACK of a route response (the node
// repeated, two resource names), decoded by proto.Unmarshal and by
// decodeRequest on a stream that knows the node.
func BenchmarkDecodeACK(b *testing.B) {
	node := envoyLikeNode()
	nodeBytes, err := proto.Marshal(node)
	if err != nil {
		b.Fatal(err)
	}
	ack, err := proto.Marshal(&discovery.DiscoveryRequest{
		VersionInfo: "0123456789abcdef", Node: node, ResponseNonce: "17", TypeUrl: resource.RouteType,
		ResourceNames: []string{"rds_egress_http_8080", "rds_ingress_http_9080"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("ACK %d bytes, node %d bytes", len(ack), len(nodeBytes))
	b.Run("proto.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req discovery.DiscoveryRequest
			if err := proto.Unmarshal(ack, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decodeRequest", func(b *testing.B) {
		var sent [numTypes]sentPair
		sent[typeRoute] = sentPair{"0123456789abcdef", "17"}
		var req discovery.DiscoveryRequest
		if _, err := decodeRequest(ack, &req, nil, &sent); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeRequest(ack, &req, nodeBytes, &sent); err != nil {
				b.Fatal(err)
			}
		}
	})
}
