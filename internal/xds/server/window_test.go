package server

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// TestNoPingPerRequest: the xDS listener answers a request without a
// PING of its own (gRPC's bandwidth-delay estimation sends one after
// data received, which costs a write and a read per push and proxy;
// limits.go). Spoken in raw HTTP/2: a request, then the client's PING;
// frames come back in the order the server queued them, so a PING of the
// server's would arrive before the answer to the client's.
func TestNoPingPerRequest(t *testing.T) {
	srv := startServer(t, colorStore(t), fakeTranslate)
	conn, err := net.DialTimeout("tcp", srv.addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(wait))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "xds"},
		{":path", "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	req, err := proto.Marshal(&discovery.DiscoveryRequest{Node: envoyNode("mesh/m/virtualNode/red"), TypeUrl: cdsType})
	if err != nil {
		t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(req)))
	if err := fr.WriteData(1, false, append(msg, req...)); err != nil {
		t.Fatal(err)
	}
	mine := [8]byte{'w', 'e', 'f', 't'}
	if err := fr.WritePing(false, mine); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer to the client's PING: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				t.Fatalf("the server sent a PING of its own after a request")
			}
			if f.Data == mine {
				return
			}
		}
	}
}
