// Package discovery resolves Cloud Map names to endpoints: an immutable,
// in-memory index of the namespaces, services and instances in the store at
// one revision, advanced change by change.
//
// Its users (the xDS server, the DNS server) follow the store like this,
// which is what Follow does:
//
//	var ix *discovery.Index
//	rev, err := st.View(ctx, func(tx store.Tx) (err error) {
//		ix, err = discovery.Load(tx, 0)
//		return err
//	})
//	ix = ix.WithRevision(rev) // View tells the revision only after fn
//	changes, err := st.Watch(ctx, cloudmap.KeyPrefix, rev)
//	for c := range changes {
//		next, changed := ix.Apply(c)
//		ix = next // publish; readers of the old index are unaffected
//		// push EDS for the virtual nodes of each ServiceRef in changed
//	}
package discovery

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
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
type Index struct {
	rev        store.Revision
	namespaces map[string]*namespace // by namespace id
	services   map[string]*service   // by service id
	byRef      map[ServiceRef]*service
	zones      map[string]*namespace // DNS namespaces by lower-case name
	dnsNames   map[string]*service   // DNS services by lower-case "<service>.<namespace>"
}

// namespace and service are immutable once built; Apply replaces them.
type namespace struct {
	id, name string
	dns      bool   // DNS_PRIVATE or DNS_PUBLIC: served by the DNS server
	public   bool   // DNS_PUBLIC
	soaTTL   uint32 // negative-caching TTL of the zone
}

type service struct {
	id, nsID string
	ref      ServiceRef
	dns      *DNSConfig // nil unless the service has DNS records
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
		services:   map[string]*service{},
		byRef:      map[ServiceRef]*service{},
		zones:      map[string]*namespace{},
		dnsNames:   map[string]*service{},
	}
}

// Load reads every namespace, service and instance through tx and returns
// their index, labelled with rev: the revision tx reads at. It only reads.
func Load(tx store.Tx, rev store.Revision) (*Index, error) {
	ix := Empty()
	ix.rev = rev
	// Namespaces, then services, then instances: each needs its parent.
	for _, prefix := range []string{cloudmap.NamespacePrefix, cloudmap.ServicePrefix, cloudmap.InstancePrefix} {
		kvs, err := tx.List(prefix, "", 0)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", prefix, err)
		}
		for _, kv := range kvs {
			if _, err := ix.put(kv, nil); err != nil {
				return nil, err
			}
		}
	}
	return ix, nil
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
// returns ix itself and nil. A record that does not decode is skipped: the
// registry is its only writer, so that would be a bug, not input.
func (ix *Index) Apply(c store.Change) (next *Index, changed []ServiceRef) {
	var ns, svc, inst []store.Event
	for _, e := range c.Events {
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
	if len(ns)+len(svc)+len(inst) == 0 {
		return ix, nil
	}
	next = &Index{
		rev:        c.Revision,
		namespaces: maps.Clone(ix.namespaces),
		services:   maps.Clone(ix.services),
		byRef:      maps.Clone(ix.byRef),
		zones:      maps.Clone(ix.zones),
		dnsNames:   maps.Clone(ix.dnsNames),
	}
	touched := map[ServiceRef]bool{}
	// Parents before children, as in Load; deletes of children before
	// their parents are harmless either way.
	for _, group := range [][]store.Event{ns, svc, inst} {
		for _, e := range group {
			var err error
			if e.Type == store.EventDelete {
				err = next.del(e.KV.Key, touched)
			} else {
				_, err = next.put(e.KV, touched)
			}
			_ = err // skipped record: see the doc comment
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

// put adds or replaces one record in ix, which the caller owns (a fresh
// clone). touched, when not nil, collects the services it affects.
func (ix *Index) put(kv store.KV, touched map[ServiceRef]bool) (bool, error) {
	ref, ok := cloudmap.ParseKey(kv.Key)
	if !ok {
		return false, nil
	}
	switch ref.Kind {
	case cloudmap.KindNamespace:
		var rec cloudmap.NamespaceRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		n := newNamespace(ref.NamespaceID, &rec)
		ix.namespaces[n.id] = n
		if n.dns {
			ix.zones[strings.ToLower(n.name)] = n
		}
	case cloudmap.KindService:
		var rec cloudmap.ServiceRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		n := ix.namespaces[deref(rec.Service.NamespaceId)]
		if n == nil {
			return false, fmt.Errorf("service %s: unknown namespace %q", ref.ServiceID, deref(rec.Service.NamespaceId))
		}
		s := &service{id: ref.ServiceID, nsID: n.id, ref: ServiceRef{n.name, deref(rec.Service.Name)}, instances: map[string]*instance{}}
		old := ix.services[s.id]
		if old != nil {
			s.instances, s.healthy = old.instances, old.healthy
			if old.dns != nil && ix.dnsNames[dnsKey(old.ref)] == old {
				delete(ix.dnsNames, dnsKey(old.ref))
			}
		}
		if dc := rec.Service.DnsConfig; dc != nil && n.dns && len(dc.DnsRecords) > 0 {
			s.dns = &DNSConfig{RoutingPolicy: dc.RoutingPolicy}
			for _, r := range dc.DnsRecords {
				s.dns.Records = append(s.dns.Records, DNSRecord{Type: r.Type, TTL: ttl(r.TTL)})
			}
			ix.dnsNames[dnsKey(s.ref)] = s
		}
		ix.services[s.id] = s
		ix.byRef[s.ref] = s
		mark(touched, s.ref)
	case cloudmap.KindInstance:
		var rec cloudmap.InstanceRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		old := ix.services[ref.ServiceID]
		if old == nil {
			return false, fmt.Errorf("instance %s: unknown service %q", ref.InstanceID, ref.ServiceID)
		}
		s := old.withInstances()
		s.instances[ref.InstanceID] = &instance{ep: endpointOf(ref.InstanceID, rec.Instance.Attributes), healthy: rec.Healthy()}
		s.sortHealthy()
		ix.replace(s)
		mark(touched, s.ref)
	}
	return true, nil
}

// del removes one record from ix, which the caller owns.
func (ix *Index) del(key string, touched map[ServiceRef]bool) error {
	ref, ok := cloudmap.ParseKey(key)
	if !ok {
		return nil
	}
	switch ref.Kind {
	case cloudmap.KindNamespace:
		if n := ix.namespaces[ref.NamespaceID]; n != nil {
			delete(ix.namespaces, n.id)
			if ix.zones[strings.ToLower(n.name)] == n {
				delete(ix.zones, strings.ToLower(n.name))
			}
		}
	case cloudmap.KindService:
		if s := ix.services[ref.ServiceID]; s != nil {
			delete(ix.services, s.id)
			if ix.byRef[s.ref] == s {
				delete(ix.byRef, s.ref)
			}
			if ix.dnsNames[dnsKey(s.ref)] == s {
				delete(ix.dnsNames, dnsKey(s.ref))
			}
			mark(touched, s.ref)
		}
	case cloudmap.KindInstance:
		old := ix.services[ref.ServiceID]
		if old == nil || old.instances[ref.InstanceID] == nil {
			return nil
		}
		s := old.withInstances()
		delete(s.instances, ref.InstanceID)
		s.sortHealthy()
		ix.replace(s)
		mark(touched, s.ref)
	}
	return nil
}

// replace installs s in place of the service with its id.
func (ix *Index) replace(s *service) {
	ix.services[s.id] = s
	ix.byRef[s.ref] = s
	if s.dns != nil {
		ix.dnsNames[dnsKey(s.ref)] = s
	}
}

// withInstances returns a copy of s whose instance map the caller may change.
func (s *service) withInstances() *service {
	c := *s
	c.instances = maps.Clone(s.instances)
	return &c
}

func (s *service) sortHealthy() {
	s.healthy = make([]Endpoint, 0, len(s.instances))
	for _, in := range s.instances {
		if in.healthy {
			s.healthy = append(s.healthy, in.ep)
		}
	}
	slices.SortFunc(s.healthy, func(a, b Endpoint) int { return strings.Compare(a.InstanceID, b.InstanceID) })
}

func mark(touched map[ServiceRef]bool, r ServiceRef) {
	if touched != nil {
		touched[r] = true
	}
}

func newNamespace(id string, rec *cloudmap.NamespaceRecord) *namespace {
	n := &namespace{id: id, name: deref(rec.Namespace.Name), soaTTL: DefaultSOATTL}
	switch rec.Namespace.Type {
	case cloudmap.NamespaceTypeDnsPrivate:
		n.dns = true
	case cloudmap.NamespaceTypeDnsPublic:
		n.dns, n.public = true, true
	}
	if p := rec.Namespace.Properties; p != nil && p.DnsProperties != nil && p.DnsProperties.SOA != nil && p.DnsProperties.SOA.TTL != nil {
		n.soaTTL = ttl(p.DnsProperties.SOA.TTL)
	}
	return n
}

func endpointOf(id string, attrs map[string]string) Endpoint {
	ep := Endpoint{InstanceID: id, Attributes: attrs}
	if a, err := netip.ParseAddr(attrs[cloudmap.AttrIPv4]); err == nil && a.Is4() {
		ep.IPv4 = a.String()
	}
	if a, err := netip.ParseAddr(attrs[cloudmap.AttrIPv6]); err == nil && a.Is6() {
		ep.IPv6 = a.String()
	}
	if p, err := strconv.ParseUint(attrs[cloudmap.AttrPort], 10, 16); err == nil {
		ep.Port = uint32(p)
	}
	return ep
}

func ttl(p *int64) uint32 {
	if p == nil || *p < 0 {
		return 0
	}
	return uint32(min(*p, 1<<31-1))
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
// for an unknown service. The slice is the caller's; the Attributes maps
// in it are shared and must not be modified.
func (ix *Index) Endpoints(namespaceName, serviceName string, attributes map[string]string) []Endpoint {
	s := ix.byRef[ServiceRef{namespaceName, serviceName}]
	if s == nil {
		return nil
	}
	out := make([]Endpoint, 0, len(s.healthy))
	for _, ep := range s.healthy {
		if matches(ep.Attributes, attributes) {
			out = append(out, ep)
		}
	}
	return out
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
	return ix.byRef[ServiceRef{namespaceName, serviceName}] != nil
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
	s := ix.dnsNames[strings.TrimSuffix(strings.ToLower(name), ".")]
	if s == nil {
		return ServiceRef{}, DNSConfig{}, false
	}
	return s.ref, *s.dns, true
}
