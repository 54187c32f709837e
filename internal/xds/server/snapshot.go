package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// The five resource types, in the order a stream receives them: secrets
// before the clusters and listeners that use them (Envoy warms a cluster
// or listener until its secrets arrive), clusters before the endpoints
// that fill them, listeners before the routes they name (the order the
// xDS protocol recommends for ADS).
const (
	typeSecret = iota
	typeCluster
	typeEndpoint
	typeListener
	typeRoute
	numTypes
)

func typeIndex(url string) int {
	switch url {
	case resource.ClusterType:
		return typeCluster
	case resource.EndpointType:
		return typeEndpoint
	case resource.ListenerType:
		return typeListener
	case resource.RouteType:
		return typeRoute
	case resource.SecretType:
		return typeSecret
	}
	return -1
}

func typeURL(t int) string {
	switch t {
	case typeCluster:
		return resource.ClusterType
	case typeEndpoint:
		return resource.EndpointType
	case typeListener:
		return resource.ListenerType
	case typeSecret:
		return resource.SecretType
	}
	return resource.RouteType
}

// typeName is the short name used in logs, metrics and /v1/proxies.
func typeName(t int) string {
	switch t {
	case typeCluster:
		return "cds"
	case typeEndpoint:
		return "eds"
	case typeListener:
		return "lds"
	case typeRoute:
		return "rds"
	case typeSecret:
		return "sds"
	}
	return "unknown"
}

// entry is one marshalled resource, interned by content: every proxy whose
// configuration holds the same bytes shares one entry. name, any and sum
// never change after creation, so stream goroutines read them without
// locks; refs and facts are owned by the machine.
type entry struct {
	name string
	any  *anypb.Any // shared by every response that carries it; never modified
	sum  [sha256.Size]byte
	// version is the resource's version in delta responses (a hash of
	// its content), and res the delta form of the resource, shared by
	// every delta response that carries it; never modified.
	version string
	res     *discovery.Resource
	// key: a Secret holding a private key (a leaf certificate), sent
	// only to streams that may have it (Options.Authorize).
	key  bool
	refs int
	// facts is what translate.CheckResource found in the resource, for
	// Envoy ([0]) and for proxyless gRPC ([1]); nil until checked as such.
	// Only a passing check is kept: a translation that fails is not
	// installed.
	facts [2]*translate.Facts
}

// newEntry interns the marshalled resource value of type t.
func newEntry(t int, name string, sum [sha256.Size]byte, key bool, value []byte) *entry {
	e := &entry{name: name, sum: sum, key: key, any: &anypb.Any{TypeUrl: typeURL(t), Value: value}, version: hex.EncodeToString(sum[:8])}
	e.res = &discovery.Resource{Name: name, Version: e.version, Resource: e.any}
	return e
}

// typeSnapshot is one type's resources for one proxy identity.
type typeSnapshot struct {
	// version is a hash of the names and contents, so the same resources
	// always have the same version, across restarts too.
	version string
	entries []*entry // sorted by name
	// byName holds the same entries when there are more than
	// smallType; entry looks the others up in entries.
	byName map[string]*entry
	// changedAt is when the write that produced this version was
	// committed; zero for the first translation of an identity, which no
	// write caused.
	changedAt time.Time
	// full is the response carrying every resource, which the hub fills
	// on first use; never nil.
	full *fullResponse
}

// smallType is the most entries a type's snapshot looks up without a map:
// most proxies have one or two of a type, and a write makes a new
// typeSnapshot of each type it changes for every proxy it affects.
const smallType = 8

// entry returns the entry named name, nil when there is none.
func (ts *typeSnapshot) entry(name string) *entry {
	if ts.byName != nil {
		return ts.byName[name]
	}
	for _, e := range ts.entries {
		if e.name == name {
			return e
		}
	}
	return nil
}

// snapshot is everything one proxy identity is served. It never changes
// after it is handed to the cache.
type snapshot struct {
	rev store.Revision
	// types are never nil (noType when unset). A type the write did not
	// change is the previous snapshot's, shared: a write that affects
	// every proxy and changes one type makes a 96-byte snapshot and one
	// typeSnapshot per proxy, not five (docs/bench/xds.md, round 17).
	types [numTypes]*typeSnapshot
	// closeErr, when set, is a gRPC status error: the identity's mesh or
	// resource is gone and every stream of it is closed with this error.
	closeErr error
	// cert is the leaf certificate the identity's secrets hold, nil when
	// none; certErr says why a referenced secret is not served.
	cert    *CertificateStatus
	certErr string
}

// noType is the type of a snapshot that serves none: no version, no
// resources. Shared, so never written.
var noType = &typeSnapshot{}

// newSnapshot is a snapshot whose types are all noType.
func newSnapshot() *snapshot {
	s := &snapshot{}
	for t := range s.types {
		s.types[t] = noType
	}
	return s
}

// versionOfItems hashes a type's resources (sorted by name) and an
// optional salt into a short, stable version string.
func versionOfItems(items []item, salt string) string {
	h := sha256.New()
	var n [8]byte
	for _, it := range items {
		binary.BigEndian.PutUint64(n[:], uint64(len(it.name)))
		h.Write(n[:])
		h.Write([]byte(it.name))
		h.Write(it.sum[:])
	}
	h.Write([]byte(salt))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:8])
}
