// Package discovery resolves Cloud Map names to endpoints: an immutable,
// in-memory index of the namespaces, services and instances in the store at
// one revision, advanced change by change.
//
// Its users (the xDS server, the DNS server) follow the store like this,
// which is what Follow does:
//
//	var ix *discovery.Index
//	rev, err := st.View(ctx, func(tx store.Tx) (err error) {
//		ix, err = discovery.Load(tx, 0, logSkipped)
//		return err
//	})
//	ix = ix.WithRevision(rev) // View tells the revision only after fn
//	changes, err := st.Watch(ctx, cloudmap.KeyPrefix, rev)
//	for c := range changes {
//		next, changed := ix.Apply(c, logSkipped)
//		ix = next // publish; readers of the old index are unaffected
//		// push EDS for the virtual nodes of each ServiceRef in changed
//	}
package discovery

import (
	"fmt"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// Endpoint is one registered instance, as the data plane dials it.
type Endpoint struct {
	InstanceID string
	IPv4       string // AWS_INSTANCE_IPV4, "" if none
	IPv6       string // AWS_INSTANCE_IPV6, "" if none
	Port       uint32 // AWS_INSTANCE_PORT, 0 if none: the listener port applies
	// Attributes are all the instance's attributes. Shared between indexes:
	// must not be modified.
	Attributes map[string]string
}

// ServiceRef names a Cloud Map service as App Mesh's awsCloudMap service
// discovery does: by namespace name and service name.
type ServiceRef struct {
	Namespace string
	Service   string
}

// Index is Cloud Map's state at one store revision. It is never modified
// after Load or Apply returns it, so any number of goroutines may read it.
//
// Apply copies only what a change touches: services live in shards by id,
// so an instance change copies one shard (about 1/256 of the services),
// not every service.
type Index struct {
	rev        store.Revision
	namespaces map[string]*namespace // by namespace id
	zones      map[string]*namespace // DNS namespaces by lower-case name
	byRef      map[ServiceRef]string // service ids
	dnsNames   map[string]string     // ids of DNS services by lower-case "<service>.<namespace>"
	services   [shards]map[string]*service
	remote     map[ServiceRef]*remoteService // services resolved by a remote Cloud Map
	// Records kept aside: each decoded, but its parent is not in the index
	// (deleted, not decoding, or not written yet), so that Load, which
	// reads parents first, leaves it out. Nothing reads them but the
	// builder: a later put of the parent serves them again, as a fresh
	// Load at that revision would.
	orphans   map[string]*service             // services of no namespace, by id
	orphanIns map[string]map[string]*instance // instances of no service, by service id, instance id
}

const shards = 256

func shardOf(id string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % shards)
}

func (ix *Index) service(id string) *service { return ix.services[shardOf(id)][id] }

// namespace and service are immutable once built; Apply replaces them.
type namespace struct {
	id, name string
	dns      bool   // DNS_PRIVATE or DNS_PUBLIC: served by the DNS server
	public   bool   // DNS_PUBLIC
	soaTTL   uint32 // negative-caching TTL of the zone
}

type service struct {
	id, nsID string
	name     string     // the service's name, as its record gives it
	dnsRec   *DNSConfig // the record's DNS records; nil if none
	// ref and dns are what the service's namespace makes of name and
	// dnsRec (dns is nil in a namespace without DNS); set when the
	// service is served, zero while it is kept aside (Index.orphans).
	ref ServiceRef
	dns *DNSConfig
	// instances by id; healthy is the sorted list of healthy endpoints.
	instances map[string]*instance
	healthy   []Endpoint
}

type instance struct {
	ep      Endpoint
	healthy bool
}

// DNSConfig is how a service answers DNS queries.
type DNSConfig struct {
	RoutingPolicy cloudmap.RoutingPolicy // MULTIVALUE or WEIGHTED
	Records       []DNSRecord
}

// DNSRecord is one record type a service answers, with its TTL in seconds.
type DNSRecord struct {
	Type cloudmap.RecordType
	TTL  uint32
}

// Zone is a DNS namespace: the DNS server is authoritative for it.
type Zone struct {
	Name        string // lower-case, without the trailing dot
	NamespaceID string
	Public      bool
	SOATTL      uint32 // seconds; the negative-caching TTL
}

// DefaultSOATTL is the SOA TTL of a DNS namespace created without one, as
// Cloud Map's hosted zones have.
const DefaultSOATTL = 15

// Empty returns an index of nothing at revision 0.
func Empty() *Index {
	return &Index{
		namespaces: map[string]*namespace{},
		zones:      map[string]*namespace{},
		byRef:      map[ServiceRef]string{},
		dnsNames:   map[string]string{},
		remote:     map[ServiceRef]*remoteService{},
		orphans:    map[string]*service{},
		orphanIns:  map[string]map[string]*instance{},
	}
}

// Load reads every namespace, service and instance through tx and returns
// their index, labelled with rev: the revision tx reads at. It only reads.
// A record that does not decode, or whose namespace or service is not
// there, is left out and passed to skip (when not nil), as Apply leaves
// it out and passes it: one bad record (a hand-edited store) must not keep every
// other from being served. The error passed for one whose parent is not
// there is ErrOrphaned. Only a store error fails Load.
func Load(tx store.Tx, rev store.Revision, skip func(key string, err error)) (*Index, error) {
	if skip == nil {
		skip = func(string, error) {}
	}
	b := &builder{ix: Empty(), ownNamespaces: true, ownRefs: true, ownRemote: true, ownOrphans: true}
	b.ix.rev = rev
	// Namespaces, then services, then instances: each needs its parent.
	for _, prefix := range []string{cloudmap.NamespacePrefix, cloudmap.ServicePrefix, cloudmap.InstancePrefix} {
		kvs, err := tx.List(prefix, "", 0)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", prefix, err)
		}
		for _, kv := range kvs {
			if err := b.put(kv); err != nil {
				skip(kv.Key, err)
			}
		}
	}
	kvs, err := tx.List(RemotePrefix, "", 0)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", RemotePrefix, err)
	}
	for _, kv := range kvs {
		if err := b.putRemote(kv.Key, kv.Value); err != nil {
			skip(kv.Key, err)
		}
	}
	return b.ix, nil
}

// WithRevision returns a copy of the index labelled with rev, for the
// caller of Load that learns the revision only after its transaction.
func (ix *Index) WithRevision(rev store.Revision) *Index {
	c := *ix
	c.rev = rev
	return &c
}

// Revision is the store revision the index reflects.
func (ix *Index) Revision() store.Revision { return ix.rev }

// Apply returns the index after change c, and the services whose endpoints
// may have changed, sorted. ix is not modified. If c holds no Cloud Map
// record (keys outside cloudmap.KeyPrefix, indexes, operations), Apply
// returns ix itself and nil. A record put that Load would leave out (it
// does not decode, or its namespace or service is not there) is passed to
// skip (when not nil), with ErrOrphaned for one whose namespace or
// service is not there. One that does not decode removes the record it
// replaces, as if deleted; one whose parent is not there is kept aside,
// unserved, with the children of a parent removed either way: the index
// answers what Load would read at c's revision, also after the parent is
// written again (its services and instances come back), not the last
// version that decoded, which a restart would drop.
func (ix *Index) Apply(c store.Change, skip func(key string, err error)) (next *Index, changed []ServiceRef) {
	var ns, svc, inst, remote []store.Event
	for _, e := range c.Events {
		if strings.HasPrefix(e.KV.Key, RemotePrefix) {
			remote = append(remote, e)
			continue
		}
		ref, ok := cloudmap.ParseKey(e.KV.Key)
		if !ok {
			continue
		}
		switch ref.Kind {
		case cloudmap.KindNamespace:
			ns = append(ns, e)
		case cloudmap.KindService:
			svc = append(svc, e)
		case cloudmap.KindInstance:
			inst = append(inst, e)
		}
	}
	if len(ns)+len(svc)+len(inst)+len(remote) == 0 {
		return ix, nil
	}
	next = new(Index)
	*next = *ix // shares every map until the builder copies it
	next.rev = c.Revision
	touched := map[ServiceRef]bool{}
	b := &builder{ix: next, touched: touched}
	// Parents before children, as in Load; deletes of children before
	// their parents are harmless either way.
	for _, group := range [][]store.Event{ns, svc, inst} {
		for _, e := range group {
			if e.Type == store.EventDelete {
				b.del(e.KV.Key)
			} else if err := b.put(e.KV); err != nil && skip != nil {
				skip(e.KV.Key, err)
			}
		}
	}
	for _, e := range remote {
		if e.Type == store.EventDelete {
			b.delRemote(e.KV.Key)
		} else if err := b.putRemote(e.KV.Key, e.KV.Value); err != nil {
			b.delRemote(e.KV.Key)
			if skip != nil {
				skip(e.KV.Key, err)
			}
		}
	}
	changed = make([]ServiceRef, 0, len(touched))
	for r := range touched {
		changed = append(changed, r)
	}
	slices.SortFunc(changed, compareRefs)
	return next, changed
}

func compareRefs(a, b ServiceRef) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Service, b.Service)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func dnsKey(r ServiceRef) string { return strings.ToLower(r.Service + "." + r.Namespace) }

// Endpoints returns the healthy instances of a service whose attributes
// include every key and value of attributes (App Mesh's awsCloudMap
// attribute filter; nil matches all), sorted by instance id. It returns nil
// for an unknown service. A service followed in a remote Cloud Map
// (RemotePrefix) is answered from the remote's last answer instead of
// weft's own registry. The slice is the caller's; the Attributes maps in
// it are shared and must not be modified.
func (ix *Index) Endpoints(namespaceName, serviceName string, attributes map[string]string) []Endpoint {
	healthy := ix.healthy(ServiceRef{namespaceName, serviceName})
	if healthy == nil {
		return nil
	}
	out := make([]Endpoint, 0, len(healthy))
	for _, ep := range healthy {
		if matches(ep.Attributes, attributes) {
			out = append(out, ep)
		}
	}
	return out
}

// healthy returns the healthy endpoints of a service, remote first, or
// nil for an unknown service.
func (ix *Index) healthy(r ServiceRef) []Endpoint {
	if rs := ix.remote[r]; rs != nil {
		if rs.healthy == nil {
			return []Endpoint{}
		}
		return rs.healthy
	}
	s := ix.service(ix.byRef[r])
	if s == nil {
		return nil
	}
	if s.healthy == nil {
		return []Endpoint{}
	}
	return s.healthy
}

func matches(attrs, filter map[string]string) bool {
	for k, v := range filter {
		if got, ok := attrs[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// HasService reports whether the service exists, healthy instances or not.
func (ix *Index) HasService(namespaceName, serviceName string) bool {
	_, ok := ix.byRef[ServiceRef{namespaceName, serviceName}]
	return ok
}

// Zone returns the DNS namespace that is the closest enclosing zone of
// name (any case, with or without the trailing dot).
func (ix *Index) Zone(name string) (Zone, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for {
		if n := ix.zones[name]; n != nil {
			return Zone{Name: strings.ToLower(n.name), NamespaceID: n.id, Public: n.public, SOATTL: n.soaTTL}, true
		}
		_, rest, ok := strings.Cut(name, ".")
		if !ok {
			return Zone{}, false
		}
		name = rest
	}
}

// Zones returns every DNS namespace, sorted by name.
func (ix *Index) Zones() []Zone {
	out := make([]Zone, 0, len(ix.zones))
	for name, n := range ix.zones {
		out = append(out, Zone{Name: name, NamespaceID: n.id, Public: n.public, SOATTL: n.soaTTL})
	}
	slices.SortFunc(out, func(a, b Zone) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DNSService returns the service whose DNS name is name (any case, with
// or without the trailing dot) and how it answers, if it has DNS records.
func (ix *Index) DNSService(name string) (ServiceRef, DNSConfig, bool) {
	s := ix.service(ix.dnsNames[strings.TrimSuffix(strings.ToLower(name), ".")])
	if s == nil || s.dns == nil {
		return ServiceRef{}, DNSConfig{}, false
	}
	return s.ref, *s.dns, true
}
