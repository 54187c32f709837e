package server

import (
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestFieldNumbers: the codec's field numbers are the descriptors'.
func TestFieldNumbers(t *testing.T) {
	resp := (&discovery.DiscoveryResponse{}).ProtoReflect().Descriptor().Fields()
	anyf := (&anypb.Any{}).ProtoReflect().Descriptor().Fields()
	for _, c := range []struct {
		fields protoreflect.FieldDescriptors
		name   protoreflect.Name
		got    protowire.Number
	}{
		{resp, "version_info", versionField}, {resp, "resources", resourcesField},
		{resp, "type_url", typeURLField}, {resp, "nonce", nonceField},
		{anyf, "type_url", anyTypeField}, {anyf, "value", anyValueField},
	} {
		if want := c.fields.ByName(c.name).Number(); c.got != want {
			t.Errorf("%s: field %d, the descriptor says %d", c.name, c.got, want)
		}
	}
}

// TestPreEncodedIsTheResponse: a response carrying every resource of a
// type, encoded by the codec as a lone stream's or once for several with
// each stream's nonce added, is byte for byte proto's encoding of the
// response with that nonce; and the codec encodes every other message as
// the proto codec does.
func TestPreEncodedIsTheResponse(t *testing.T) {
	c, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 3, 700, 70000} { // below and above gRPC's pooling threshold
		ts := &typeSnapshot{version: "v1"}
		if size > 0 {
			ts.entries = append(ts.entries, newEntry(typeCluster, "a", [32]byte{1}, false, []byte{0x0a, 0x01, 'a'}))
			ts.entries = append(ts.entries, newEntry(typeCluster, "b", [32]byte{2}, false, make([]byte, size)))
		}
		ts.full = &fullResponse{names: &nameSet{}}
		r := &discovery.DiscoveryResponse{VersionInfo: ts.version, TypeUrl: cdsType}
		for _, e := range ts.entries {
			r.Resources = append(r.Resources, e.any)
		}
		body := ts.full.body(ts, typeCluster)
		for _, nonce := range []string{"1", "42.x8z3", "p9"} {
			want := proto.Clone(r).(*discovery.DiscoveryResponse)
			want.Nonce = nonce
			wantBytes, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []*preEncoded{{body: body, ts: ts, typ: typeCluster, nonce: nonce}, {ts: ts, typ: typeCluster, nonce: nonce}} {
				data, err := c.Marshal(p)
				if err != nil {
					t.Fatal(err)
				}
				if got := data.Materialize(); string(got) != string(wantBytes) {
					t.Fatalf("size %d, nonce %s, shared body %v: encoded %x, want proto's %x", size, nonce, p.body != nil, got, wantBytes)
				}
				data.Free()
			}
		}
		// The shared body is never written to.
		if again := appendResponse(nil, ts, typeCluster, ""); string(again) != string(body) {
			t.Fatal("the encoded body changed")
		}
	}
	// Other messages: as proto.
	req := &discovery.DiscoveryRequest{TypeUrl: ldsType, ResponseNonce: "3"}
	data, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back discovery.DiscoveryRequest
	if err := c.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(req, &back) {
		t.Fatalf("round trip: %v, want %v", &back, req)
	}
}

// TestReplicasShareEncodedResponses: two replicas of one identity get
// their wildcard responses from bytes encoded once, each with its own
// stream's nonce, which its ACK answers; a write reaches both the same
// way.
func TestReplicasShareEncodedResponses(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	a := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	la := envoyStart(t, a)
	b := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	lb := envoyStart(t, b)
	for _, typ := range []string{cdsType, ldsType} {
		x, y := proto.Clone(la[typ]).(*discovery.DiscoveryResponse), proto.Clone(lb[typ]).(*discovery.DiscoveryResponse)
		if x.GetNonce() == "" || y.GetNonce() == "" {
			t.Fatalf("%s: nonces %q, %q", typ, x.GetNonce(), y.GetNonce())
		}
		x.Nonce, y.Nonce = "", ""
		if !proto.Equal(x, y) {
			t.Fatalf("%s: replicas got different responses", typ)
		}
	}
	srv.hub.mu.Lock()
	var encoded bool
	for _, is := range srv.hub.idents {
		if snap := is.snap.Load(); snap != nil && snap.types[typeCluster].full.encoded != nil {
			encoded = true
		}
	}
	srv.hub.mu.Unlock()
	if !encoded {
		t.Fatal("no wildcard response was sent from its encoding")
	}
	// A write: both replicas get the new clusters and ACK them.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	for _, c := range []*adsClient{a, b} {
		cds := c.next()
		expect(t, cds, cdsType, "cds_egress_m_blue", "cds_egress_m_green")
		c.ack(cds)
	}
	for _, id := range []string{"mesh/m/virtualNode/red"} {
		waitStatus(t, srv.Server, id, func(p ProxyStatus) bool {
			return p.Types["cds"].Acked != "" && p.Types["cds"].Acked != la[cdsType].GetVersionInfo()
		})
	}
}
