package translate

import (
	"slices"
	"strings"
	"sync"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A sidecar's egress route table is its name and the virtual hosts of
// the services it calls, each host shared by every table that holds it
// (Memo). When callers' backends differ, a write that changes one host
// brings as many new tables as callers, and CheckResource validates each
// whole: every host again in every table. CheckAssembled checks such a
// table from its hosts instead: each host once per HostChecks (the
// validation of a message with a name and hosts alone is that of each
// host), then the rules between the hosts of one table (names and
// domains unique). The result is CheckResource's; a table that fails is
// checked whole, for CheckResource's error.

// HostChecks holds what checking each virtual host found, for one batch
// of tables. Safe for concurrent use.
type HostChecks struct {
	mu sync.Mutex
	m  map[hostCheckKey]*hostCheck
}

type hostCheckKey struct {
	vh   *routev3.VirtualHost
	grpc bool
}

// hostCheck is one host's deep validation and route rules: whether they
// passed, and the clusters its routes name.
type hostCheck struct {
	ok       bool
	clusters []string
}

// NewHostChecks returns an empty HostChecks.
func NewHostChecks() *HostChecks {
	return &HostChecks{m: map[hostCheckKey]*hostCheck{}}
}

// CheckAssembled is CheckResource(rc, grpc), checking each host of a
// table that holds a name and virtual hosts and nothing else once per hc
// (the hosts must not be modified meanwhile: the Memo's never are).
func (hc *HostChecks) CheckAssembled(rc *routev3.RouteConfiguration, grpc bool) (Facts, error) {
	if !nameAndHostsOnly(rc) {
		return CheckResource(rc, grpc)
	}
	f := Facts{Name: rc.GetName()}
	for _, vh := range rc.GetVirtualHosts() {
		h := hc.host(vh, grpc)
		if !h.ok {
			return CheckResource(rc, grpc)
		}
		f.Clusters = append(f.Clusters, h.clusters...)
	}
	if !uniqueHosts(rc) {
		return CheckResource(rc, grpc)
	}
	slices.Sort(f.Clusters)
	f.Clusters = slices.Compact(f.Clusters)
	return f, nil
}

// host checks vh as CheckResource checks each host of a table: deep
// validation (everything packed in it included) and the route rules.
func (hc *HostChecks) host(vh *routev3.VirtualHost, grpc bool) *hostCheck {
	k := hostCheckKey{vh, grpc}
	hc.mu.Lock()
	h := hc.m[k]
	hc.mu.Unlock()
	if h != nil {
		return h
	}
	c := &checker{grpc: grpc}
	if vh == nil || DeepValidate(vh) != nil {
		h = &hostCheck{}
	} else {
		for _, r := range vh.GetRoutes() {
			c.route("", r)
		}
		h = &hostCheck{ok: len(c.errs) == 0, clusters: c.f.Clusters}
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if q := hc.m[k]; q != nil {
		return q
	}
	hc.m[k] = h
	return h
}

// nameAndHostsOnly reports whether rc sets no field but its name and
// virtual hosts, and holds no unknown field.
func nameAndHostsOnly(rc *routev3.RouteConfiguration) bool {
	m := rc.ProtoReflect()
	if len(m.GetUnknown()) > 0 {
		return false
	}
	only := true
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if n := fd.Name(); n != "name" && n != "virtual_hosts" {
			only = false
		}
		return only
	})
	return only
}

// uniqueHosts reports whether rc's hosts pass routeConfig's rules between
// hosts: no name and no domain (in any case) twice.
func uniqueHosts(rc *routev3.RouteConfiguration) bool {
	hosts := make(map[string]bool, len(rc.GetVirtualHosts()))
	domains := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		if hosts[vh.GetName()] {
			return false
		}
		hosts[vh.GetName()] = true
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			if domains[d] {
				return false
			}
			domains[d] = true
		}
	}
	return true
}
