package cloudmap

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/store"
)

// maxServiceAttributes is Cloud Map's quota of attributes per service.
const maxServiceAttributes = 30

// serviceNameIndex is the name index key of a service: DNS names do not
// tell case apart, so in DNS namespaces the name is lower-cased.
func serviceNameIndex(ns *Namespace, name string) string {
	if ns.Type != NamespaceTypeHttp {
		name = strings.ToLower(name)
	}
	return serviceNameKey(deref(ns.Id), name)
}

// CreateService creates a service in a namespace.
func (r *Registry) CreateService(ctx context.Context, v Valid[CreateServiceRequest]) (*CreateServiceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	nsRef := deref(req.NamespaceId)
	if nsRef == "" && req.DnsConfig != nil {
		nsRef = deref(req.DnsConfig.NamespaceId)
	}
	if nsRef == "" {
		return nil, invalid("NamespaceId is required")
	}
	if len(req.Tags) > maxTags {
		return nil, errorf(CodeTooManyTags, "A resource can have at most %d tags", maxTags)
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
	suffix, err := r.randomString(lowerAlnum, 16)
	if err != nil {
		return nil, err
	}
	srvID := "srv-" + suffix
	return idempotent(ctx, r, st, "CreateService", deref(req.CreatorRequestId), hash, "", func(tx store.Tx) (*CreateServiceResponse, error) {
		nsRec, err := r.getNamespace(tx, nsRef)
		if err != nil {
			return nil, err
		}
		ns := &nsRec.Namespace
		nsID := deref(ns.Id)
		svc := Service{
			Id:               ptr(srvID),
			Arn:              ptr(r.arn("service", srvID)),
			Name:             req.Name,
			NamespaceId:      ptr(nsID),
			Description:      req.Description,
			CreateDate:       shape.NewTime(st.now),
			CreatedByAccount: ptr(r.account),
			ResourceOwner:    ns.ResourceOwner,
			Type:             ServiceTypeHttp,
		}
		if req.CreatorRequestId != nil {
			svc.CreatorRequestId = req.CreatorRequestId
		}
		switch {
		case ns.Type == NamespaceTypeHttp && req.DnsConfig != nil:
			return nil, invalid("DnsConfig is not supported for services in HTTP namespaces")
		case ns.Type != NamespaceTypeHttp && req.Type == ServiceTypeOptionHttp && req.DnsConfig != nil:
			return nil, invalid("A service of Type HTTP has no DnsConfig")
		case ns.Type != NamespaceTypeHttp && req.Type != ServiceTypeOptionHttp:
			if req.DnsConfig == nil {
				return nil, invalid("DnsConfig is required for services in DNS namespaces, unless Type is HTTP")
			}
			dc, err := checkDnsConfig(req.DnsConfig.RoutingPolicy, req.DnsConfig.DnsRecords)
			if err != nil {
				return nil, err
			}
			dc.NamespaceId = ptr(nsID)
			svc.DnsConfig = dc
			svc.Type = ServiceTypeDnsHttp
		}
		if err := checkHealth(ns, svc.DnsConfig, req.HealthCheckConfig, req.HealthCheckCustomConfig); err != nil {
			return nil, err
		}
		svc.HealthCheckConfig = req.HealthCheckConfig
		if req.HealthCheckCustomConfig != nil {
			// FailureThreshold is no longer supported; Cloud Map reports 1.
			svc.HealthCheckCustomConfig = &HealthCheckCustomConfig{FailureThreshold: ptr(int64(1))}
		}

		nameKey := serviceNameIndex(ns, deref(req.Name))
		if kv, ok, err := tx.Get(nameKey); err != nil {
			return nil, err
		} else if ok {
			e := errorf(CodeServiceAlreadyExists, "Service with name %s already exists in namespace %s", deref(req.Name), nsID)
			e.Fields = map[string]string{"ServiceId": string(kv.Value), "ServiceArn": r.arn("service", string(kv.Value))}
			var existing ServiceRecord
			if found, err := getJSON(tx, ServiceKey(string(kv.Value)), &existing); err == nil && found && existing.Service.CreatorRequestId != nil {
				e.Fields["CreatorRequestId"] = *existing.Service.CreatorRequestId
			}
			return nil, e
		}
		if err := r.roomForService(tx, nsID); err != nil {
			return nil, err
		}
		rec := ServiceRecord{Service: svc, Tags: mergeTags(nil, req.Tags)}
		if err := putJSON(tx, ServiceKey(srvID), rec); err != nil {
			return nil, err
		}
		if err := tx.Put(nameKey, []byte(srvID)); err != nil {
			return nil, err
		}
		return &CreateServiceResponse{Service: &svc}, nil
	})
}

// checkDnsConfig checks a service's DNS records and returns the DnsConfig
// to store, with the default routing policy.
func checkDnsConfig(policy RoutingPolicy, records []DnsRecord) (*DnsConfig, error) {
	if len(records) == 0 {
		return nil, invalid("DnsConfig.DnsRecords must have at least one record")
	}
	types := recordTypes(records)
	if len(types) != len(records) {
		return nil, invalid("DnsConfig.DnsRecords has a record type twice")
	}
	switch strings.Join(types, ",") {
	case "A", "AAAA", "A,AAAA", "SRV", "CNAME":
	default:
		return nil, invalid("DnsConfig.DnsRecords must be one of A, AAAA, A and AAAA, SRV, or CNAME; not %s", strings.Join(types, " and "))
	}
	if policy == "" {
		policy = RoutingPolicyMultivalue
	}
	if types[0] == string(RecordTypeCname) && policy != RoutingPolicyWeighted {
		return nil, invalid("A CNAME record requires the WEIGHTED routing policy")
	}
	return &DnsConfig{RoutingPolicy: policy, DnsRecords: slices.Clone(records)}, nil
}

// recordTypes returns the distinct record types, sorted.
func recordTypes(records []DnsRecord) []string {
	var types []string
	for _, rec := range records {
		if !slices.Contains(types, string(rec.Type)) {
			types = append(types, string(rec.Type))
		}
	}
	slices.Sort(types)
	return types
}

func hasRecord(dc *DnsConfig, t RecordType) bool {
	if dc == nil {
		return false
	}
	for _, rec := range dc.DnsRecords {
		if rec.Type == t {
			return true
		}
	}
	return false
}

func checkHealth(ns *Namespace, dc *DnsConfig, hc *HealthCheckConfig, custom *HealthCheckCustomConfig) error {
	if hc == nil {
		return nil
	}
	if custom != nil {
		return invalid("A service has HealthCheckConfig or HealthCheckCustomConfig, not both")
	}
	if ns.Type == NamespaceTypeDnsPrivate {
		return invalid("HealthCheckConfig is supported only in public DNS and HTTP namespaces")
	}
	if hc.Type == HealthCheckTypeTcp && hc.ResourcePath != nil {
		return invalid("A TCP health check has no ResourcePath")
	}
	if hasRecord(dc, RecordTypeCname) {
		return invalid("A service with a CNAME record cannot have a HealthCheckConfig")
	}
	return nil
}

// serviceOut is the service as Get returns it, with its InstanceCount.
func serviceOut(tx store.Tx, rec *ServiceRecord) (*Service, error) {
	n, err := tx.Count(InstancesPrefix(deref(rec.Service.Id)))
	if err != nil {
		return nil, err
	}
	svc := rec.Service
	svc.InstanceCount = ptr(int64(n))
	return &svc, nil
}

// GetService returns a service by id or ARN.
func (r *Registry) GetService(ctx context.Context, v Valid[GetServiceRequest]) (*GetServiceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var out GetServiceResponse
	err = r.view(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.Id))
		if err != nil {
			return err
		}
		out.Service, err = serviceOut(tx, rec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ListServices lists services in id order, filtered.
func (r *Registry) ListServices(ctx context.Context, v Valid[ListServicesRequest]) (*ListServicesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var preds []func(*Service) bool
	for _, f := range req.Filters {
		var field func(*Service) string
		values := f.Values
		switch f.Name {
		case ServiceFilterNameNamespaceId:
			field = func(s *Service) string { return deref(s.NamespaceId) }
			values = make([]string, len(f.Values))
			for i, v := range f.Values {
				values[i], _ = r.resourceID(v, "namespace")
			}
		case ServiceFilterNameResourceOwner:
			field = func(s *Service) string { return ownerClass(r.account, deref(s.ResourceOwner)) }
		}
		p, err := predicate(string(f.Name), f.Condition, values, []FilterCondition{FilterConditionEq}, field)
		if err != nil {
			return nil, err
		}
		preds = append(preds, p)
	}
	out := ListServicesResponse{Services: []ServiceSummary{}}
	err = r.view(ctx, func(tx store.Tx) error {
		var err error
		out.NextToken, err = r.page(tx, ServicePrefix, deref(req.NextToken), maxResults(req.MaxResults, 100), func(kv store.KV) (bool, error) {
			var rec ServiceRecord
			if err := unmarshal(kv, &rec); err != nil {
				return false, err
			}
			for _, p := range preds {
				if !p(&rec.Service) {
					return false, nil
				}
			}
			s, err := serviceOut(tx, &rec)
			if err != nil {
				return false, err
			}
			out.Services = append(out.Services, ServiceSummary{
				Id: s.Id, Arn: s.Arn, Name: s.Name, Type: s.Type, Description: s.Description, InstanceCount: s.InstanceCount,
				DnsConfig: s.DnsConfig, HealthCheckConfig: s.HealthCheckConfig, HealthCheckCustomConfig: s.HealthCheckCustomConfig,
				CreateDate: s.CreateDate, CreatedByAccount: s.CreatedByAccount, ResourceOwner: s.ResourceOwner,
			})
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateService changes a service's description, its records' TTLs and
// its Route 53 health check config (which, as in Cloud Map, is deleted
// when the request omits it).
func (r *Registry) UpdateService(ctx context.Context, v Valid[UpdateServiceRequest]) (*UpdateServiceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	st, err := r.newStamp()
	if err != nil {
		return nil, err
	}
	var out UpdateServiceResponse
	err = r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.Id))
		if err != nil {
			return err
		}
		nsRec, err := r.getNamespace(tx, deref(rec.Service.NamespaceId))
		if err != nil {
			return err
		}
		ns := &nsRec.Namespace
		if ns.Type == NamespaceTypeHttp {
			return invalid("UpdateService is not supported for services in HTTP namespaces")
		}
		svc := &rec.Service
		change := req.Service
		if change.Description != nil {
			svc.Description = change.Description
		}
		if change.DnsConfig != nil {
			if svc.DnsConfig == nil {
				return invalid("Service %s has no DnsConfig to update", deref(svc.Id))
			}
			if !slices.Equal(recordTypes(change.DnsConfig.DnsRecords), recordTypes(svc.DnsConfig.DnsRecords)) ||
				len(change.DnsConfig.DnsRecords) != len(svc.DnsConfig.DnsRecords) {
				return invalid("The record types of a service cannot change: it has %s", strings.Join(recordTypes(svc.DnsConfig.DnsRecords), ", "))
			}
			dc := *svc.DnsConfig
			dc.DnsRecords = slices.Clone(change.DnsConfig.DnsRecords)
			svc.DnsConfig = &dc
		}
		if change.HealthCheckConfig != nil && svc.HealthCheckCustomConfig != nil {
			return invalid("Service %s has a HealthCheckCustomConfig; it cannot also have a HealthCheckConfig", deref(svc.Id))
		}
		if err := checkHealth(ns, svc.DnsConfig, change.HealthCheckConfig, nil); err != nil {
			return err
		}
		svc.HealthCheckConfig = change.HealthCheckConfig
		if err := putJSON(tx, ServiceKey(deref(svc.Id)), rec); err != nil {
			return err
		}
		out.OperationId, err = r.recordOp(tx, st, OperationTypeUpdateService, map[string]string{"SERVICE": deref(svc.Id), "NAMESPACE": deref(ns.Id)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteService deletes a service that has no instances.
func (r *Registry) DeleteService(ctx context.Context, v Valid[DeleteServiceRequest]) (*DeleteServiceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	err = r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.Id))
		if err != nil {
			return err
		}
		srvID := deref(rec.Service.Id)
		n, err := tx.Count(InstancesPrefix(srvID))
		if err != nil {
			return err
		}
		if n > 0 {
			return errorf(CodeResourceInUse, "Service %s has %d registered instances; deregister them first", srvID, n)
		}
		nsRec, err := r.getNamespace(tx, deref(rec.Service.NamespaceId))
		if err != nil {
			return err
		}
		if err := tx.Delete(ServiceKey(srvID)); err != nil {
			return err
		}
		return tx.Delete(serviceNameIndex(&nsRec.Namespace, deref(rec.Service.Name)))
	})
	if err != nil {
		return nil, err
	}
	return &DeleteServiceResponse{}, nil
}

// GetServiceAttributes returns a service's attributes.
func (r *Registry) GetServiceAttributes(ctx context.Context, v Valid[GetServiceAttributesRequest]) (*GetServiceAttributesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var out GetServiceAttributesResponse
	err = r.view(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		attrs := rec.Attributes
		if attrs == nil {
			attrs = map[string]string{}
		}
		out.ServiceAttributes = &ServiceAttributes{ServiceArn: rec.Service.Arn, ResourceOwner: rec.Service.ResourceOwner, Attributes: attrs}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateServiceAttributes adds or replaces service attributes.
func (r *Registry) UpdateServiceAttributes(ctx context.Context, v Valid[UpdateServiceAttributesRequest]) (*UpdateServiceAttributesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	err = r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		attrs := maps.Clone(rec.Attributes)
		if attrs == nil {
			attrs = map[string]string{}
		}
		maps.Copy(attrs, req.Attributes)
		if len(attrs) > maxServiceAttributes {
			return errorf(CodeServiceAttributesLimit, "A service can have at most %d attributes", maxServiceAttributes)
		}
		rec.Attributes = attrs
		return putJSON(tx, ServiceKey(deref(rec.Service.Id)), rec)
	})
	if err != nil {
		return nil, err
	}
	return &UpdateServiceAttributesResponse{}, nil
}

// DeleteServiceAttributes removes service attributes by key.
func (r *Registry) DeleteServiceAttributes(ctx context.Context, v Valid[DeleteServiceAttributesRequest]) (*DeleteServiceAttributesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	err = r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getService(tx, deref(req.ServiceId))
		if err != nil {
			return err
		}
		attrs := maps.Clone(rec.Attributes)
		for _, k := range req.Attributes {
			delete(attrs, k)
		}
		if len(attrs) == 0 {
			// Stored without, as a service that never had any: the
			// model's ServiceAttributesMap holds 1 to 30.
			attrs = nil
		}
		rec.Attributes = attrs
		return putJSON(tx, ServiceKey(deref(rec.Service.Id)), rec)
	})
	if err != nil {
		return nil, err
	}
	return &DeleteServiceAttributesResponse{}, nil
}
