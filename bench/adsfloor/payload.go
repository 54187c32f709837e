package main

import (
	_ "embed"
	"fmt"
	"strconv"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3" // the route's retry predicate
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// route.json is a route table in the shape weft translates for a client
// of xdsbench's headline mesh (two backend services, each a virtual
// router splitting between two virtual nodes; the names, retry policy
// and timeout as internal/xds/translate's goldens have them).
//
//go:embed route.json
var routeJSON []byte

// nonceField is DiscoveryResponse's nonce (field 5): encoded after the
// resources, so a response is the shared body followed by the stream's
// nonce, as weft's codec sends it (internal/xds/server/codec.go).
const nonceField = 5

// responseBody is the encoding of the round's DiscoveryResponse but for
// its nonce: the route table, version "v<round>".
func responseBody(rc *route.RouteConfiguration, round uint64) ([]byte, error) {
	a, err := anypb.New(rc)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(&discovery.DiscoveryResponse{
		VersionInfo: version(round), Resources: []*anypb.Any{a}, TypeUrl: resource.RouteType})
}

// loadRoute decodes route.json.
func loadRoute() (*route.RouteConfiguration, error) {
	var rc route.RouteConfiguration
	if err := protojson.Unmarshal(routeJSON, &rc); err != nil {
		return nil, fmt.Errorf("route.json: %w", err)
	}
	return &rc, nil
}

func version(round uint64) string { return "v" + strconv.FormatUint(round, 10) }

// appendNonce appends the nonce field of stream id's response of round:
// "<round>.<id>".
func appendNonce(b []byte, round uint64, id int) []byte {
	var n [40]byte
	s := strconv.AppendUint(n[:0], round, 10)
	s = append(s, '.')
	s = strconv.AppendInt(s, int64(id), 10)
	b = protowire.AppendTag(b, nonceField, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}

// ackMatches reports whether req acknowledges stream id's response of
// the push p: its version and nonce.
func ackMatches(req *discovery.DiscoveryRequest, p *push, id int) bool {
	var n [40]byte
	s := strconv.AppendUint(n[:0], p.round, 10)
	s = append(s, '.')
	s = strconv.AppendInt(s, int64(id), 10)
	return req.GetResponseNonce() == string(s) && req.GetVersionInfo() == p.version && req.GetErrorDetail() == nil
}
