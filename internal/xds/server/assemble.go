package server

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A sidecar's egress route table is its name and the virtual hosts of
// the services it calls on one port, and the translator hands the same
// *VirtualHost to every caller of a service (translate.Memo): callers
// whose backends differ each get a table of their own made of shared
// hosts. Such a table is assembled, not marshalled: protobuf's encoding
// of a message is the concatenation of its fields' (in field-number
// order, as deterministic marshalling writes them), so its bytes are the
// name's field followed by each host's encoding as field 2, and each
// host is marshalled and hashed once per batch however many tables hold
// it. Its content sum is computed from the name and the hosts' sums, not
// from its bytes: a table whose sum is interned already needs no bytes
// at all. The sums of assembled tables are a family of their own
// (routeSumTag): a table is assembled exactly when it holds a name and
// hosts and nothing else, so one content always gets one sum.

// Field numbers of envoy.config.route.v3.RouteConfiguration.
const (
	routeNameField  protowire.Number = 1
	routeHostsField protowire.Number = 2
)

// routeSumTag starts what an assembled table's sum hashes.
const routeSumTag = "weft assembled RouteConfiguration v1\x00"

// hostEncoding is one virtual host's deterministic encoding and its sum.
type hostEncoding struct {
	value []byte
	sum   [sha256.Size]byte
}

// assemblable reports whether rc holds a name and virtual hosts and no
// other field (set or unknown), none of the hosts nil.
func assemblable(rc *routev3.RouteConfiguration) bool {
	m := rc.ProtoReflect()
	if len(m.GetUnknown()) > 0 {
		return false
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Number() != routeNameField && fd.Number() != routeHostsField && m.Has(fd) {
			return false
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		if vh == nil {
			return false
		}
	}
	return true
}

// host returns vh's encoding, marshalled on the batch's first use.
func (sh *shared) host(vh *routev3.VirtualHost) (*hostEncoding, error) {
	sh.mu.Lock()
	h := sh.hosts[vh]
	sh.mu.Unlock()
	if h != nil {
		return h, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(vh)
	if err != nil {
		return nil, fmt.Errorf("marshal virtual host %q: %w", vh.GetName(), err)
	}
	h = &hostEncoding{value: b, sum: sha256.Sum256(b)}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if q := sh.hosts[vh]; q != nil {
		return q, nil // marshalled twice at once: equal, keep the first
	}
	if sh.hosts == nil {
		sh.hosts = map[*routev3.VirtualHost]*hostEncoding{}
	}
	sh.hosts[vh] = h
	return h, nil
}

// assembleRoute returns rc's sum and, when interned holds no entry of
// that sum, its encoding (assemblable(rc) must hold).
func (sh *shared) assembleRoute(rc *routev3.RouteConfiguration, interned map[[sha256.Size]byte]*entry) (sum [sha256.Size]byte, value []byte, err error) {
	var hostsArr [16]*hostEncoding
	hosts := hostsArr[:0]
	// What the sum hashes: the tag, the name's length and the name, each
	// host's sum.
	var inArr [512]byte
	in := append(inArr[:0], routeSumTag...)
	in = binary.BigEndian.AppendUint64(in, uint64(len(rc.GetName())))
	in = append(in, rc.GetName()...)
	size := 0
	if rc.GetName() != "" {
		size += protowire.SizeTag(routeNameField) + protowire.SizeBytes(len(rc.GetName()))
	}
	for _, vh := range rc.GetVirtualHosts() {
		e, err := sh.host(vh)
		if err != nil {
			return sum, nil, err
		}
		hosts = append(hosts, e)
		in = append(in, e.sum[:]...)
		size += protowire.SizeTag(routeHostsField) + protowire.SizeBytes(len(e.value))
	}
	sum = sha256.Sum256(in)
	if interned[sum] != nil {
		return sum, nil, nil
	}
	value = make([]byte, 0, size)
	if rc.GetName() != "" {
		value = protowire.AppendTag(value, routeNameField, protowire.BytesType)
		value = protowire.AppendString(value, rc.GetName())
	}
	for _, e := range hosts {
		value = protowire.AppendTag(value, routeHostsField, protowire.BytesType)
		value = protowire.AppendBytes(value, e.value)
	}
	return sum, value, nil
}
