package cloudmap

import (
	"context"
	"encoding/binary"
	"io"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/store"
)

// maxAttributesSize bounds an instance's attributes, in characters of all
// keys and values, as Cloud Map's API reference does. (Their number is
// Limits.CustomAttributesPerInstance.)
const maxAttributesSize = 5000

// reportedHealth is an instance's health as the API reports it: custom
// health checks report the stored status, Route 53 health checks (which
// weft does not run) HEALTHY, and services without a check UNKNOWN.
func reportedHealth(svc *Service, inst *InstanceRecord) HealthStatus {
	switch {
	case svc.HealthCheckCustomConfig != nil:
		if inst.Health == HealthStatusUnhealthy {
			return HealthStatusUnhealthy
		}
		return HealthStatusHealthy
	case svc.HealthCheckConfig != nil:
		return HealthStatusHealthy
	}
	return HealthStatusUnknown
}

func hasHealthCheck(svc *Service) bool {
	return svc.HealthCheckCustomConfig != nil || svc.HealthCheckConfig != nil
}

// checkAttributes applies RegisterInstance's rules on attributes to an
// instance of svc in ns, with at most maxCustom custom attributes (those
// not named AWS_...; zero or less: no limit).
func checkAttributes(ns *Namespace, svc *Service, attrs map[string]string, maxCustom int) error {
	custom, size := 0, 0
	for k, v := range attrs {
		size += len([]rune(k)) + len([]rune(v))
		if !strings.HasPrefix(k, "AWS_") {
			custom++
		}
	}
	if maxCustom > 0 && custom > maxCustom {
		return invalid("An instance can have at most %d custom attributes; this one has %d", maxCustom, custom)
	}
	if size > maxAttributesSize {
		return invalid("The attributes of an instance total %d characters; at most %d are allowed", size, maxAttributesSize)
	}
	_, hasV4 := attrs[AttrIPv4]
	_, hasV6 := attrs[AttrIPv6]
	_, hasPort := attrs[AttrPort]
	if v, ok := attrs[AttrIPv4]; ok {
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return invalid("%s must be an IPv4 address: %q", AttrIPv4, v)
		}
	}
	if v, ok := attrs[AttrIPv6]; ok {
		if a, err := netip.ParseAddr(v); err != nil || !a.Is6() || a.Is4In6() {
			return invalid("%s must be an IPv6 address: %q", AttrIPv6, v)
		}
	}
	if v, ok := attrs[AttrPort]; ok {
		if _, err := strconv.ParseUint(v, 10, 16); err != nil {
			return invalid("%s must be a port number from 0 to 65535: %q", AttrPort, v)
		}
	}
	if v, ok := attrs[AttrInitHealthStat]; ok && v != string(HealthStatusHealthy) && v != string(HealthStatusUnhealthy) {
		return invalid("%s must be HEALTHY or UNHEALTHY: %q", AttrInitHealthStat, v)
	}
	if v, ok := attrs[AttrCNAME]; ok {
		if err := checkDomainName(AttrCNAME, v); err != nil {
			return err
		}
	}
	if _, ok := attrs[AttrEC2InstanceID]; ok {
		if ns.Type != NamespaceTypeHttp {
			return invalid("%s is supported only in HTTP namespaces", AttrEC2InstanceID)
		}
		for k := range attrs {
			if k != AttrEC2InstanceID && k != AttrInitHealthStat {
				return invalid("With %s, the only other attribute allowed is %s, not %s", AttrEC2InstanceID, AttrInitHealthStat, k)
			}
		}
		return nil
	}
	dc := svc.DnsConfig
	if _, ok := attrs[AttrAliasDNSName]; ok {
		if !hasRecord(dc, RecordTypeA) && !hasRecord(dc, RecordTypeAaaa) {
			return invalid("%s requires a service with an A or AAAA record", AttrAliasDNSName)
		}
		if dc.RoutingPolicy != RoutingPolicyWeighted {
			return invalid("%s requires a service with the WEIGHTED routing policy", AttrAliasDNSName)
		}
		for k := range attrs {
			if strings.HasPrefix(k, "AWS_INSTANCE_") {
				return invalid("With %s, %s is not allowed", AttrAliasDNSName, k)
			}
		}
		return nil
	}
	switch {
	case hasRecord(dc, RecordTypeA) && !hasV4:
		return invalid("%s is required: service %s has an A record", AttrIPv4, deref(svc.Id))
	case hasRecord(dc, RecordTypeAaaa) && !hasV6:
		return invalid("%s is required: service %s has an AAAA record", AttrIPv6, deref(svc.Id))
	case hasRecord(dc, RecordTypeSrv) && !hasV4 && !hasV6:
		return invalid("%s or %s is required: service %s has an SRV record", AttrIPv4, AttrIPv6, deref(svc.Id))
	case hasRecord(dc, RecordTypeSrv) && !hasPort:
		return invalid("%s is required: service %s has an SRV record", AttrPort, deref(svc.Id))
	case hasRecord(dc, RecordTypeCname) && attrs[AttrCNAME] == "":
		return invalid("%s is required: service %s has a CNAME record", AttrCNAME, deref(svc.Id))
	case svc.HealthCheckConfig != nil && !hasPort:
		return invalid("%s is required: service %s has a health check", AttrPort, deref(svc.Id))
	}
	return nil
}

// RegisterInstance creates or replaces an instance of a service.
func (r *Registry) RegisterInstance(ctx context.Context, v Valid[RegisterInstanceRequest]) (*RegisterInstanceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.CreatorRequestId = nil
	hash, err := requestHash(h)
	if err != nil {
		return nil, err
	}
	st, err := r.newStamp()
	if err != nil {
		return nil, err
	}
	instID := deref(req.InstanceId)
	return idempotent(ctx, r, st, "RegisterInstance", deref(req.CreatorRequestId), hash, st.opID, func(tx store.Tx) (*RegisterInstanceResponse, error) {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return nil, err
		}
		svc := &rec.Service
		nsRec, err := r.getNamespace(tx, deref(svc.NamespaceId))
		if err != nil {
			return nil, err
		}
		if err := checkAttributes(&nsRec.Namespace, svc, req.Attributes, r.limits.CustomAttributesPerInstance); err != nil {
			return nil, err
		}
		srvID := deref(svc.Id)
		// Registering an existing id replaces the instance: not a new one
		// for the quotas.
		if _, exists, err := tx.Get(InstanceKey(srvID, instID)); err != nil {
			return nil, err
		} else if !exists {
			if err := r.roomForInstance(tx, deref(svc.NamespaceId), srvID); err != nil {
				return nil, err
			}
		}
		inst := InstanceRecord{
			Instance: Instance{Id: ptr(instID), Attributes: maps.Clone(req.Attributes), CreatorRequestId: req.CreatorRequestId, CreatedByAccount: ptr(r.account)},
			Health:   HealthStatusUnknown,
		}
		switch {
		case svc.HealthCheckCustomConfig != nil:
			inst.Health = HealthStatusHealthy
			if req.Attributes[AttrInitHealthStat] == string(HealthStatusUnhealthy) {
				inst.Health = HealthStatusUnhealthy
			}
		case svc.HealthCheckConfig != nil:
			inst.Health = HealthStatusHealthy
		}
		if err := putJSON(tx, InstanceKey(srvID, instID), inst); err != nil {
			return nil, err
		}
		rec.InstancesRevision++
		if err := putJSON(tx, ServiceKey(srvID), rec); err != nil {
			return nil, err
		}
		opID, err := r.recordOp(tx, st, OperationTypeRegisterInstance, map[string]string{"INSTANCE": instID, "SERVICE": srvID, "NAMESPACE": deref(svc.NamespaceId)})
		if err != nil {
			return nil, err
		}
		return &RegisterInstanceResponse{OperationId: opID}, nil
	})
}

func (r *Registry) getInstance(tx store.Tx, srvID, instID string) (*InstanceRecord, error) {
	var inst InstanceRecord
	found, err := getJSON(tx, InstanceKey(srvID, instID), &inst)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errorf(CodeInstanceNotFound, "Instance %s not found in service %s", instID, srvID)
	}
	return &inst, nil
}

// DeregisterInstance deletes an instance.
func (r *Registry) DeregisterInstance(ctx context.Context, v Valid[DeregisterInstanceRequest]) (*DeregisterInstanceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	st, err := r.newStamp()
	if err != nil {
		return nil, err
	}
	var out DeregisterInstanceResponse
	err = r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		srvID, instID := deref(rec.Service.Id), deref(req.InstanceId)
		if _, err := r.getInstance(tx, srvID, instID); err != nil {
			return err
		}
		if err := tx.Delete(InstanceKey(srvID, instID)); err != nil {
			return err
		}
		rec.InstancesRevision++
		if err := putJSON(tx, ServiceKey(srvID), rec); err != nil {
			return err
		}
		out.OperationId, err = r.recordOp(tx, st, OperationTypeDeregisterInstance, map[string]string{"INSTANCE": instID, "SERVICE": srvID, "NAMESPACE": deref(rec.Service.NamespaceId)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetInstance returns an instance.
func (r *Registry) GetInstance(ctx context.Context, v Valid[GetInstanceRequest]) (*GetInstanceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var out GetInstanceResponse
	err = r.view(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		inst, err := r.getInstance(tx, deref(rec.Service.Id), deref(req.InstanceId))
		if err != nil {
			return err
		}
		out.Instance, out.ResourceOwner = &inst.Instance, rec.Service.ResourceOwner
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ListInstances lists a service's instances in id order.
func (r *Registry) ListInstances(ctx context.Context, v Valid[ListInstancesRequest]) (*ListInstancesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	out := ListInstancesResponse{Instances: []InstanceSummary{}}
	err = r.view(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		out.ResourceOwner = rec.Service.ResourceOwner
		out.NextToken, err = r.page(tx, InstancesPrefix(deref(rec.Service.Id)), deref(req.NextToken), maxResults(req.MaxResults, 100), func(kv store.KV) (bool, error) {
			var inst InstanceRecord
			if err := unmarshal(kv, &inst); err != nil {
				return false, err
			}
			out.Instances = append(out.Instances, InstanceSummary{Id: inst.Instance.Id, Attributes: inst.Instance.Attributes, CreatedByAccount: inst.Instance.CreatedByAccount})
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetInstancesHealthStatus returns the health of some or all instances of
// a service.
func (r *Registry) GetInstancesHealthStatus(ctx context.Context, v Valid[GetInstancesHealthStatusRequest]) (*GetInstancesHealthStatusResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	out := GetInstancesHealthStatusResponse{Status: map[string]HealthStatus{}}
	err = r.view(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		srvID := deref(rec.Service.Id)
		var wanted map[string]bool
		if len(req.Instances) > 0 {
			wanted = map[string]bool{}
			for _, id := range req.Instances {
				if _, err := r.getInstance(tx, srvID, id); err != nil {
					return err
				}
				wanted[id] = true
			}
		}
		out.NextToken, err = r.page(tx, InstancesPrefix(srvID), deref(req.NextToken), maxResults(req.MaxResults, 100), func(kv store.KV) (bool, error) {
			var inst InstanceRecord
			if err := unmarshal(kv, &inst); err != nil {
				return false, err
			}
			id := deref(inst.Instance.Id)
			if wanted != nil && !wanted[id] {
				return false, nil
			}
			out.Status[id] = reportedHealth(&rec.Service, &inst)
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateInstanceCustomHealthStatus sets the health of an instance of a
// service with a custom health check; it takes effect at once.
func (r *Registry) UpdateInstanceCustomHealthStatus(ctx context.Context, v Valid[UpdateInstanceCustomHealthStatusRequest]) error {
	req, err := v.Input()
	if err != nil {
		return err
	}
	return r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		if rec.Service.HealthCheckCustomConfig == nil {
			return errorf(CodeCustomHealthNotFound, "Service %s has no custom health check (HealthCheckCustomConfig)", deref(rec.Service.Id))
		}
		srvID, instID := deref(rec.Service.Id), deref(req.InstanceId)
		inst, err := r.getInstance(tx, srvID, instID)
		if err != nil {
			return err
		}
		status := HealthStatus(req.Status)
		if inst.Health == status {
			return nil // no change, no revision
		}
		inst.Health = status
		if err := putJSON(tx, InstanceKey(srvID, instID), inst); err != nil {
			return err
		}
		rec.InstancesRevision++
		return putJSON(tx, ServiceKey(srvID), rec)
	})
}

// lookupByName finds a service by namespace name and service name, as
// DiscoverInstances does.
func (r *Registry) lookupByName(tx store.Tx, nsName, svcName, owner string) (*NamespaceRecord, *ServiceRecord, error) {
	notFound := errorf(CodeNamespaceNotFound, "Namespace not found: %s", nsName)
	if owner != "" && owner != r.account {
		return nil, nil, notFound
	}
	kv, ok, err := tx.Get(namespaceNameKey(r.account, strings.ToLower(nsName)))
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, notFound
	}
	nsRec, err := r.getNamespace(tx, string(kv.Value))
	if err != nil {
		return nil, nil, err
	}
	kv, ok, err = tx.Get(serviceNameIndex(&nsRec.Namespace, svcName))
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, errorf(CodeServiceNotFound, "Service %s not found in namespace %s", svcName, nsName)
	}
	rec, err := r.getService(tx, string(kv.Value))
	if err != nil {
		return nil, nil, err
	}
	return nsRec, rec, nil
}

func matchAll(attrs, filter map[string]string) bool {
	for k, v := range filter {
		if got, ok := attrs[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// DiscoverInstances returns instances of a service by name, filtered by
// attributes and health, in random order.
func (r *Registry) DiscoverInstances(ctx context.Context, v Valid[DiscoverInstancesRequest]) (*DiscoverInstancesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var seed [16]byte
	if _, err := io.ReadFull(r.rand, seed[:]); err != nil {
		return nil, err
	}
	var out DiscoverInstancesResponse
	err = r.view(ctx, func(tx store.Tx) error {
		_, rec, err := r.lookupByName(tx, deref(req.NamespaceName), deref(req.ServiceName), deref(req.OwnerAccount))
		if err != nil {
			return err
		}
		svc := &rec.Service
		kvs, err := tx.List(InstancesPrefix(deref(svc.Id)), "", 0)
		if err != nil {
			return err
		}
		var all, healthy []HttpInstanceSummary
		for _, kv := range kvs {
			var inst InstanceRecord
			if err := unmarshal(kv, &inst); err != nil {
				r.skip(err)
				continue
			}
			if !matchAll(inst.Instance.Attributes, req.QueryParameters) {
				continue
			}
			s := HttpInstanceSummary{
				InstanceId: inst.Instance.Id, NamespaceName: req.NamespaceName, ServiceName: svc.Name,
				HealthStatus: reportedHealth(svc, &inst), Attributes: inst.Instance.Attributes,
			}
			all = append(all, s)
			if s.HealthStatus != HealthStatusUnhealthy {
				healthy = append(healthy, s)
			}
		}
		var picked []HttpInstanceSummary
		switch {
		case !hasHealthCheck(svc) || req.HealthStatus == HealthStatusFilterAll:
			picked = all
		case req.HealthStatus == HealthStatusFilterUnhealthy:
			picked = slices.DeleteFunc(slices.Clone(all), func(s HttpInstanceSummary) bool { return s.HealthStatus != HealthStatusUnhealthy })
		case req.HealthStatus == HealthStatusFilterHealthyOrElseAll && len(healthy) == 0:
			picked = all
		default: // HEALTHY, the default
			picked = healthy
		}
		// Optional parameters narrow the result only if something matches.
		if len(req.OptionalParameters) > 0 {
			narrowed := slices.DeleteFunc(slices.Clone(picked), func(s HttpInstanceSummary) bool { return !matchAll(s.Attributes, req.OptionalParameters) })
			if len(narrowed) > 0 {
				picked = narrowed
			}
		}
		rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
		rng.Shuffle(len(picked), func(i, j int) { picked[i], picked[j] = picked[j], picked[i] })
		if n := maxResults(req.MaxResults, 100); len(picked) > n {
			picked = picked[:n]
		}
		out.Instances = append([]HttpInstanceSummary{}, picked...)
		out.InstancesRevision = ptr(rec.InstancesRevision)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DiscoverInstancesRevision returns the revision of a service's instances,
// which increases with every change to them.
func (r *Registry) DiscoverInstancesRevision(ctx context.Context, v Valid[DiscoverInstancesRevisionRequest]) (*DiscoverInstancesRevisionResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var out DiscoverInstancesRevisionResponse
	err = r.view(ctx, func(tx store.Tx) error {
		_, rec, err := r.lookupByName(tx, deref(req.NamespaceName), deref(req.ServiceName), deref(req.OwnerAccount))
		if err != nil {
			return err
		}
		out.InstancesRevision = ptr(rec.InstancesRevision)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
