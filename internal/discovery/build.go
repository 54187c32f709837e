package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// How a record changes the index: the builder that Load and Apply share.
//
// A record is served when it decodes and its parent is served: a service
// when its namespace is, an instance when its service is. One that
// decodes under a parent that is not served is kept aside (Index.orphans,
// Index.orphanIns), and so are the children of a parent that goes (its
// record deleted or no longer decoding): a put of the parent serves them
// again. So the index at a revision is the same whatever the order of the
// writes that led to it, and Apply's index is Load's.

// ErrOrphaned is why Load and Apply leave out a record that decodes but
// whose parent is not served (a service's namespace, an instance's
// service): it is set aside, not dropped, and served again once the
// parent is put back. Their callers tell it from a record that does not
// decode with errors.Is; the parent, when it did not decode, was reported
// itself.
var ErrOrphaned = errors.New("set aside until its parent is back")

// builder makes the next index out of the previous one, copying each map
// the first time it writes to it.
type builder struct {
	ix            *Index
	ownNamespaces bool
	ownRefs       bool
	ownShard      [shards]bool
	ownRemote     bool
	ownOrphans    bool
	touched       map[ServiceRef]bool // nil: not collected
}

func (b *builder) namespaces() *Index {
	if !b.ownNamespaces {
		b.ix.namespaces, b.ix.zones = maps.Clone(b.ix.namespaces), maps.Clone(b.ix.zones)
		b.ownNamespaces = true
	}
	return b.ix
}

func (b *builder) refs() *Index {
	if !b.ownRefs {
		b.ix.byRef, b.ix.dnsNames = maps.Clone(b.ix.byRef), maps.Clone(b.ix.dnsNames)
		b.ownRefs = true
	}
	return b.ix
}

func (b *builder) shard(id string) map[string]*service {
	i := shardOf(id)
	if !b.ownShard[i] {
		b.ix.services[i] = maps.Clone(b.ix.services[i])
		if b.ix.services[i] == nil {
			b.ix.services[i] = map[string]*service{}
		}
		b.ownShard[i] = true
	}
	return b.ix.services[i]
}

// orphans returns the index with its maps of records kept aside copied.
// The instance maps inside orphanIns stay shared: replace one, never
// change it.
func (b *builder) orphans() *Index {
	if !b.ownOrphans {
		b.ix.orphans, b.ix.orphanIns = maps.Clone(b.ix.orphans), maps.Clone(b.ix.orphanIns)
		if b.ix.orphans == nil {
			b.ix.orphans = map[string]*service{}
		}
		if b.ix.orphanIns == nil {
			b.ix.orphanIns = map[string]map[string]*instance{}
		}
		b.ownOrphans = true
	}
	return b.ix
}

func (b *builder) mark(r ServiceRef) {
	if b.touched != nil {
		b.touched[r] = true
	}
}

// put adds or replaces one record. It returns why Load leaves the record
// out, if it does: a record that does not decode is removed, as if
// deleted; one whose parent is not served is kept aside.
func (b *builder) put(kv store.KV) error {
	ref, ok := cloudmap.ParseKey(kv.Key)
	if !ok {
		return nil
	}
	switch ref.Kind {
	case cloudmap.KindNamespace:
		var rec cloudmap.NamespaceRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			b.del(kv.Key)
			return fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		b.putNamespace(newNamespace(ref.NamespaceID, &rec))
	case cloudmap.KindService:
		var rec cloudmap.ServiceRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			b.del(kv.Key)
			return fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		return b.putService(newService(ref.ServiceID, &rec))
	case cloudmap.KindInstance:
		var rec cloudmap.InstanceRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			b.del(kv.Key)
			return fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		in := &instance{ep: endpointOf(ref.InstanceID, rec.Instance.Attributes), healthy: rec.Healthy()}
		return b.putInstance(ref.ServiceID, ref.InstanceID, in)
	}
	return nil
}

// del removes one record; the children of a namespace or service are
// kept aside.
func (b *builder) del(key string) {
	ref, ok := cloudmap.ParseKey(key)
	if !ok {
		return
	}
	switch ref.Kind {
	case cloudmap.KindNamespace:
		if n := b.ix.namespaces[ref.NamespaceID]; n != nil {
			b.dropNamespace(n)
		}
	case cloudmap.KindService:
		s := b.ix.service(ref.ServiceID)
		if s != nil {
			b.unserve(s)
		} else if s = b.ix.orphans[ref.ServiceID]; s != nil {
			delete(b.orphans().orphans, s.id)
		} else {
			return
		}
		if len(s.instances) > 0 {
			b.orphans().orphanIns[s.id] = s.instances
		}
	case cloudmap.KindInstance:
		b.delInstance(ref.ServiceID, ref.InstanceID)
	}
}

// putNamespace adds or replaces namespace n, and serves the services kept
// aside for it. When n changes what its services are (its name, DNS or
// not), they are served again under the new version.
func (b *builder) putNamespace(n *namespace) {
	old := b.ix.namespaces[n.id]
	if old != nil && old.name == n.name && old.dns == n.dns {
		b.setNamespace(old, n) // a SOA TTL: the zone, not the services
		return
	}
	if old != nil {
		b.dropNamespace(old)
	}
	b.setNamespace(nil, n)
	for _, s := range b.ix.orphans {
		if s.nsID == n.id {
			delete(b.orphans().orphans, s.id)
			b.serve(s, n)
		}
	}
}

// setNamespace replaces old (nil: none) by n in the namespaces and zones.
func (b *builder) setNamespace(old, n *namespace) {
	ix := b.namespaces()
	if old != nil && ix.zones[strings.ToLower(old.name)] == old {
		delete(ix.zones, strings.ToLower(old.name))
	}
	ix.namespaces[n.id] = n
	if n.dns {
		ix.zones[strings.ToLower(n.name)] = n
	}
}

// dropNamespace removes n and keeps its services aside. It looks at every
// service: a namespace goes rarely (Cloud Map deletes only an empty one).
func (b *builder) dropNamespace(n *namespace) {
	ix := b.namespaces()
	delete(ix.namespaces, n.id)
	if ix.zones[strings.ToLower(n.name)] == n {
		delete(ix.zones, strings.ToLower(n.name))
	}
	for i := range b.ix.services {
		for _, s := range b.ix.services[i] {
			if s.nsID == n.id {
				b.unserve(s)
				c := *s
				c.ref, c.dns = ServiceRef{}, nil
				b.orphans().orphans[c.id] = &c
			}
		}
	}
}

// putService adds or replaces service s (without instances), which takes
// the instances of the version it replaces, served or kept aside, or
// those kept aside for its id.
func (b *builder) putService(s *service) error {
	if old := b.ix.service(s.id); old != nil {
		s.instances, s.healthy = old.instances, old.healthy
		b.unserve(old)
	} else if old := b.ix.orphans[s.id]; old != nil {
		s.instances, s.healthy = old.instances, old.healthy
		delete(b.orphans().orphans, s.id)
	} else if ins := b.ix.orphanIns[s.id]; ins != nil {
		s.instances = ins
		s.sortHealthy()
		delete(b.orphans().orphanIns, s.id)
	}
	n := b.ix.namespaces[s.nsID]
	if n == nil {
		b.orphans().orphans[s.id] = s
		return fmt.Errorf("service %s: unknown namespace %q: %w", s.id, s.nsID, ErrOrphaned)
	}
	b.serve(s, n)
	return nil
}

// serve adds service s of namespace n to what the index answers.
func (b *builder) serve(s *service, n *namespace) {
	c := *s
	c.ref, c.dns = ServiceRef{n.name, s.name}, nil
	if n.dns {
		c.dns = s.dnsRec
	}
	b.shard(c.id)[c.id] = &c
	ix := b.refs()
	ix.byRef[c.ref] = c.id
	if c.dns != nil {
		ix.dnsNames[dnsKey(c.ref)] = c.id
	}
	b.mark(c.ref)
}

// unserve removes served service s from what the index answers.
func (b *builder) unserve(s *service) {
	delete(b.shard(s.id), s.id)
	ix := b.refs()
	if ix.byRef[s.ref] == s.id {
		delete(ix.byRef, s.ref)
	}
	if ix.dnsNames[dnsKey(s.ref)] == s.id {
		delete(ix.dnsNames, dnsKey(s.ref))
	}
	b.mark(s.ref)
}

// putInstance adds or replaces instance id of service svcID.
func (b *builder) putInstance(svcID, id string, in *instance) error {
	if old := b.ix.service(svcID); old != nil {
		s := old.withInstances()
		s.instances[id] = in
		s.sortHealthy()
		b.shard(s.id)[s.id] = s
		b.mark(s.ref)
		return nil
	}
	if old := b.ix.orphans[svcID]; old != nil {
		s := old.withInstances()
		s.instances[id] = in
		s.sortHealthy()
		b.orphans().orphans[s.id] = s
		// The service is stored; its namespace is what is missing.
		return fmt.Errorf("instance %s: service %s set aside, unknown namespace %q: %w", id, svcID, s.nsID, ErrOrphaned)
	}
	ins := maps.Clone(b.ix.orphanIns[svcID])
	if ins == nil {
		ins = map[string]*instance{}
	}
	ins[id] = in
	b.orphans().orphanIns[svcID] = ins
	return fmt.Errorf("instance %s: unknown service %q: %w", id, svcID, ErrOrphaned)
}

// delInstance removes instance id of service svcID, served or kept aside.
func (b *builder) delInstance(svcID, id string) {
	if old := b.ix.service(svcID); old != nil {
		if old.instances[id] == nil {
			return
		}
		s := old.withInstances()
		delete(s.instances, id)
		s.sortHealthy()
		b.shard(s.id)[s.id] = s
		b.mark(s.ref)
		return
	}
	if old := b.ix.orphans[svcID]; old != nil {
		if old.instances[id] != nil {
			s := old.withInstances()
			delete(s.instances, id)
			s.sortHealthy()
			b.orphans().orphans[s.id] = s
		}
		return
	}
	if ins := b.ix.orphanIns[svcID]; ins[id] != nil {
		ins = maps.Clone(ins)
		delete(ins, id)
		if len(ins) == 0 {
			delete(b.orphans().orphanIns, svcID)
		} else {
			b.orphans().orphanIns[svcID] = ins
		}
	}
}

// withInstances returns a copy of s whose instance map the caller may change.
func (s *service) withInstances() *service {
	c := *s
	c.instances = maps.Clone(s.instances)
	if c.instances == nil {
		c.instances = map[string]*instance{}
	}
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

// newService returns the service of rec, without instances and not yet
// served.
func newService(id string, rec *cloudmap.ServiceRecord) *service {
	s := &service{id: id, nsID: deref(rec.Service.NamespaceId), name: deref(rec.Service.Name), instances: map[string]*instance{}}
	if dc := rec.Service.DnsConfig; dc != nil && len(dc.DnsRecords) > 0 {
		s.dnsRec = &DNSConfig{RoutingPolicy: dc.RoutingPolicy}
		for _, r := range dc.DnsRecords {
			s.dnsRec.Records = append(s.dnsRec.Records, DNSRecord{Type: r.Type, TTL: ttl(r.TTL)})
		}
	}
	return s
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
