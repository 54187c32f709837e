package server

import (
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestPreEncodedIsTheResponse: a response encoded once without its nonce
// and sent with a stream's nonce decodes as the response with that nonce,
// and the codec encodes every other message as the proto codec does.
func TestPreEncodedIsTheResponse(t *testing.T) {
	c, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	r := &discovery.DiscoveryResponse{VersionInfo: "v1", TypeUrl: cdsType, Resources: []*anypb.Any{
		{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: []byte{0x0a, 0x01, 'a'}},
		{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: []byte{0x0a, 0x01, 'b'}},
	}}
	body, err := encodeBody(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, nonce := range []string{"1", "42", "p9"} {
		data, err := c.Marshal(&preEncoded{body: body, nonce: nonce})
		if err != nil {
			t.Fatal(err)
		}
		var got discovery.DiscoveryResponse
		if err := proto.Unmarshal(data.Materialize(), &got); err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(r).(*discovery.DiscoveryResponse)
		want.Nonce = nonce
		if !proto.Equal(&got, want) {
			t.Fatalf("nonce %s: decoded %v, want %v", nonce, &got, want)
		}
	}
	// The shared body is never written to.
	again, err := encodeBody(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(body) {
		t.Fatal("the encoded body changed")
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
