package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/cloudmap"
)

// RemotePrefix holds what weft learned from a remote Cloud Map (AWS Cloud
// Map, or another weft), one key per followed service:
//
//	cloudmap/remote/<namespace-name>/<service-name>   RemoteRecord
//
// Only the remote follower (internal/discovery/remote) writes these keys.
// A service with a record here is resolved from it, not from weft's own
// registry: the record holds the last answer the remote gave, so the
// endpoints survive the remote being unreachable and a restart.
// cloudmap.ParseKey rejects these keys, so weft's Cloud Map API never
// shows them.
const RemotePrefix = cloudmap.KeyPrefix + "remote/"

// RemoteKey is the key of the record of a remotely resolved service.
func RemoteKey(r ServiceRef) string {
	return RemotePrefix + url.PathEscape(r.Namespace) + "/" + url.PathEscape(r.Service)
}

// ParseRemoteKey returns the service a RemotePrefix key names.
func ParseRemoteKey(key string) (ServiceRef, bool) {
	rest, ok := strings.CutPrefix(key, RemotePrefix)
	if !ok {
		return ServiceRef{}, false
	}
	ns, svc, ok := strings.Cut(rest, "/")
	if !ok {
		return ServiceRef{}, false
	}
	ns, err1 := url.PathUnescape(ns)
	svc, err2 := url.PathUnescape(svc)
	if err1 != nil || err2 != nil || ns == "" || svc == "" {
		return ServiceRef{}, false
	}
	return ServiceRef{Namespace: ns, Service: svc}, true
}

// RemoteRecord is the last answer of a remote Cloud Map's DiscoverInstances
// for one service (every instance, whatever its health).
type RemoteRecord struct {
	Remote string `json:"remote"` // the name of the remote it came from
	// Revision is the service's instances revision on the remote, as
	// DiscoverInstancesRevision returns it.
	Revision  int64            `json:"revision"`
	Instances []RemoteInstance `json:"instances"`
}

// CheckRemoteRecord checks one key under RemotePrefix and its value as
// a restore must before writing them: a RemoteRecord, decoded as the
// index reads it (decodeRemote), under the key of the service it
// resolves.
func CheckRemoteRecord(key string, value []byte) error {
	if ref, ok := ParseRemoteKey(key); !ok || RemoteKey(ref) != key {
		return errors.New("not the key of a remotely resolved service")
	}
	if _, err := decodeRemote(value); err != nil {
		return fmt.Errorf("not a remote service record: %w", err)
	}
	return nil
}

// RemoteInstance is one instance as DiscoverInstances returns it.
type RemoteInstance struct {
	ID         string            `json:"id"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// HealthStatus is HEALTHY, UNHEALTHY or UNKNOWN; only UNHEALTHY
	// instances are left out of the endpoints, as for weft's own registry.
	HealthStatus string `json:"healthStatus,omitempty"`
}

// remoteService is a RemoteRecord as the index serves it.
type remoteService struct {
	healthy []Endpoint // sorted by instance id
}

func decodeRemote(value []byte) (*remoteService, error) {
	var rec RemoteRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, err
	}
	s := &remoteService{healthy: make([]Endpoint, 0, len(rec.Instances))}
	for _, in := range rec.Instances {
		if in.HealthStatus == string(cloudmap.HealthStatusUnhealthy) || in.ID == "" {
			continue
		}
		s.healthy = append(s.healthy, endpointOf(in.ID, in.Attributes))
	}
	slices.SortFunc(s.healthy, func(a, b Endpoint) int { return strings.Compare(a.InstanceID, b.InstanceID) })
	return s, nil
}

// remotes returns the index's remote map, copied on first write.
func (b *builder) remotes() map[ServiceRef]*remoteService {
	if !b.ownRemote {
		b.ix.remote = maps.Clone(b.ix.remote)
		if b.ix.remote == nil {
			b.ix.remote = map[ServiceRef]*remoteService{}
		}
		b.ownRemote = true
	}
	return b.ix.remote
}

// putRemote adds or replaces a remote record; delRemote drops one.
func (b *builder) putRemote(key string, value []byte) error {
	ref, ok := ParseRemoteKey(key)
	if !ok {
		return nil
	}
	s, err := decodeRemote(value)
	if err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	b.remotes()[ref] = s
	b.mark(ref)
	return nil
}

func (b *builder) delRemote(key string) {
	ref, ok := ParseRemoteKey(key)
	if !ok || b.ix.remote[ref] == nil {
		return
	}
	delete(b.remotes(), ref)
	b.mark(ref)
}
