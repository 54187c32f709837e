package cloudmap

import (
	"context"
	"strings"

	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/store"
)

// maxTags is Cloud Map's quota of tags per resource.
const maxTags = 50

// namespaceSpec is what the three CreateXNamespace requests have in common.
type namespaceSpec struct {
	op, name, description, vpc string
	typ                        NamespaceType
	soa                        *SOA
	tags                       []Tag
	requestID                  string
	hashOf                     any // the request with its request id cleared
}

// CreateHttpNamespace creates a namespace discoverable only through
// DiscoverInstances.
func (r *Registry) CreateHttpNamespace(ctx context.Context, v Valid[CreateHttpNamespaceRequest]) (*CreateHttpNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.CreatorRequestId = nil
	id, err := r.createNamespace(ctx, namespaceSpec{op: "CreateHttpNamespace", typ: NamespaceTypeHttp,
		name: deref(req.Name), description: deref(req.Description), tags: req.Tags,
		requestID: deref(req.CreatorRequestId), hashOf: h})
	if err != nil {
		return nil, err
	}
	return &CreateHttpNamespaceResponse{OperationId: id}, nil
}

// CreatePrivateDnsNamespace creates a namespace whose services the DNS
// server answers for. The VPC is recorded and otherwise ignored.
func (r *Registry) CreatePrivateDnsNamespace(ctx context.Context, v Valid[CreatePrivateDnsNamespaceRequest]) (*CreatePrivateDnsNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.CreatorRequestId = nil
	spec := namespaceSpec{op: "CreatePrivateDnsNamespace", typ: NamespaceTypeDnsPrivate,
		name: deref(req.Name), description: deref(req.Description), vpc: deref(req.Vpc), tags: req.Tags,
		requestID: deref(req.CreatorRequestId), hashOf: h}
	if p := req.Properties; p != nil && p.DnsProperties != nil {
		spec.soa = p.DnsProperties.SOA
	}
	id, err := r.createNamespace(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &CreatePrivateDnsNamespaceResponse{OperationId: id}, nil
}

// CreatePublicDnsNamespace creates a public DNS namespace; weft's DNS
// server answers for it as for a private one.
func (r *Registry) CreatePublicDnsNamespace(ctx context.Context, v Valid[CreatePublicDnsNamespaceRequest]) (*CreatePublicDnsNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.CreatorRequestId = nil
	spec := namespaceSpec{op: "CreatePublicDnsNamespace", typ: NamespaceTypeDnsPublic,
		name: deref(req.Name), description: deref(req.Description), tags: req.Tags,
		requestID: deref(req.CreatorRequestId), hashOf: h}
	if p := req.Properties; p != nil && p.DnsProperties != nil {
		spec.soa = p.DnsProperties.SOA
	}
	id, err := r.createNamespace(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &CreatePublicDnsNamespaceResponse{OperationId: id}, nil
}

func (r *Registry) createNamespace(ctx context.Context, spec namespaceSpec) (*string, error) {
	// A public namespace's name is a domain name by the model's pattern; a
	// private one's pattern takes any printable character, so weft asks
	// for a domain name here, since its DNS server answers for it.
	if spec.typ == NamespaceTypeDnsPrivate {
		if err := checkDomainName("Name", spec.name); err != nil {
			return nil, err
		}
	}
	if len(spec.tags) > maxTags {
		return nil, errorf(CodeTooManyTags, "A resource can have at most %d tags", maxTags)
	}
	hash, err := requestHash(spec.hashOf)
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
	zone, err := r.randomString(upperAlnum, 20)
	if err != nil {
		return nil, err
	}
	nsID := "ns-" + suffix
	type result struct{ OperationId *string }
	res, err := idempotent(ctx, r, st, spec.op, spec.requestID, hash, st.opID, func(tx store.Tx) (*result, error) {
		nameKey := namespaceNameKey(r.account, strings.ToLower(spec.name))
		if kv, ok, err := tx.Get(nameKey); err != nil {
			return nil, err
		} else if ok {
			e := errorf(CodeNamespaceAlreadyExists, "Namespace with name %s already exists", spec.name)
			e.Fields = map[string]string{"NamespaceId": string(kv.Value)}
			var existing NamespaceRecord
			if found, err := getJSON(tx, NamespaceKey(string(kv.Value)), &existing); err == nil && found && existing.Namespace.CreatorRequestId != nil {
				e.Fields["CreatorRequestId"] = *existing.Namespace.CreatorRequestId
			}
			return nil, e
		}
		if err := r.roomForNamespace(tx); err != nil {
			return nil, err
		}
		ns := Namespace{
			Id:            ptr(nsID),
			Arn:           ptr(r.arn("namespace", nsID)),
			Name:          ptr(spec.name),
			Type:          spec.typ,
			CreateDate:    shape.NewTime(st.now),
			ResourceOwner: ptr(r.account),
			Properties:    &NamespaceProperties{DnsProperties: &DnsProperties{}, HttpProperties: &HttpProperties{HttpName: ptr(spec.name)}},
		}
		if spec.description != "" {
			ns.Description = ptr(spec.description)
		}
		if spec.requestID != "" {
			ns.CreatorRequestId = ptr(spec.requestID)
		}
		if spec.typ != NamespaceTypeHttp {
			ns.Properties.DnsProperties = &DnsProperties{HostedZoneId: ptr("Z" + zone), SOA: &SOA{}}
			if spec.soa != nil {
				ns.Properties.DnsProperties.SOA = &SOA{TTL: spec.soa.TTL}
			}
		}
		rec := NamespaceRecord{Namespace: ns, Vpc: spec.vpc, Tags: mergeTags(nil, spec.tags)}
		if err := putJSON(tx, NamespaceKey(nsID), rec); err != nil {
			return nil, err
		}
		if err := tx.Put(nameKey, []byte(nsID)); err != nil {
			return nil, err
		}
		opID, err := r.recordOp(tx, st, OperationTypeCreateNamespace, map[string]string{"NAMESPACE": nsID})
		if err != nil {
			return nil, err
		}
		return &result{OperationId: opID}, nil
	})
	if err != nil {
		return nil, err
	}
	return res.OperationId, nil
}

// checkDomainName checks that a DNS namespace's name can be a DNS zone.
func checkDomainName(field, name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" || len(n) > 253 {
		return invalid("%s must be a domain name of 1 to 253 characters: %q", field, name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return invalid("%s must be a domain name whose labels have 1 to 63 characters: %q", field, name)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return invalid("%s must be a domain name of letters, digits, '-' and '_': %q", field, name)
			}
		}
	}
	return nil
}

// namespaceOut is the namespace as Get returns it, with its ServiceCount.
func namespaceOut(tx store.Tx, rec *NamespaceRecord) (*Namespace, error) {
	n, err := tx.Count(serviceNamesPrefix(deref(rec.Namespace.Id)))
	if err != nil {
		return nil, err
	}
	ns := rec.Namespace
	ns.ServiceCount = ptr(int64(n))
	return &ns, nil
}

// GetNamespace returns a namespace by id or ARN.
func (r *Registry) GetNamespace(ctx context.Context, v Valid[GetNamespaceRequest]) (*GetNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var out GetNamespaceResponse
	err = r.view(ctx, func(tx store.Tx) error {
		rec, err := r.getNamespace(tx, deref(req.Id))
		if err != nil {
			return err
		}
		out.Namespace, err = namespaceOut(tx, rec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ListNamespaces lists namespaces in id order, filtered.
func (r *Registry) ListNamespaces(ctx context.Context, v Valid[ListNamespacesRequest]) (*ListNamespacesResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	match, err := r.namespaceFilter(req.Filters)
	if err != nil {
		return nil, err
	}
	out := ListNamespacesResponse{Namespaces: []NamespaceSummary{}}
	err = r.view(ctx, func(tx store.Tx) error {
		var err error
		out.NextToken, err = r.page(tx, NamespacePrefix, deref(req.NextToken), maxResults(req.MaxResults, 100), func(kv store.KV) (bool, error) {
			var rec NamespaceRecord
			if err := unmarshal(kv, &rec); err != nil {
				return false, err
			}
			if !match(&rec.Namespace) {
				return false, nil
			}
			ns, err := namespaceOut(tx, &rec)
			if err != nil {
				return false, err
			}
			out.Namespaces = append(out.Namespaces, NamespaceSummary{
				Id: ns.Id, Arn: ns.Arn, Name: ns.Name, Type: ns.Type, Description: ns.Description,
				ServiceCount: ns.ServiceCount, Properties: ns.Properties, CreateDate: ns.CreateDate, ResourceOwner: ns.ResourceOwner,
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

func (r *Registry) namespaceFilter(filters []NamespaceFilter) (func(*Namespace) bool, error) {
	var preds []func(*Namespace) bool
	for _, f := range filters {
		var field func(*Namespace) string
		allowed := []FilterCondition{FilterConditionEq, FilterConditionBeginsWith}
		switch f.Name {
		case NamespaceFilterNameType:
			field = func(n *Namespace) string { return string(n.Type) }
			allowed = append(allowed, FilterConditionIn)
		case NamespaceFilterNameName:
			field = func(n *Namespace) string { return deref(n.Name) }
		case NamespaceFilterNameHttpName:
			field = func(n *Namespace) string {
				if n.Properties == nil || n.Properties.HttpProperties == nil {
					return ""
				}
				return deref(n.Properties.HttpProperties.HttpName)
			}
		case NamespaceFilterNameResourceOwner:
			field = func(n *Namespace) string { return ownerClass(r.account, deref(n.ResourceOwner)) }
			allowed = []FilterCondition{FilterConditionEq}
		}
		p, err := predicate(string(f.Name), f.Condition, f.Values, allowed, field)
		if err != nil {
			return nil, err
		}
		preds = append(preds, p)
	}
	return func(n *Namespace) bool {
		for _, p := range preds {
			if !p(n) {
				return false
			}
		}
		return true
	}, nil
}

// ownerClass is the RESOURCE_OWNER filter's value for a resource owner.
func ownerClass(self, owner string) string {
	if owner == self {
		return "SELF"
	}
	return "OTHER_ACCOUNTS"
}

// predicate builds one list filter: EQ and BEGINS_WITH take one value, IN
// one or more; EQ is the default.
func predicate[T any](name string, cond FilterCondition, values []string, allowed []FilterCondition, field func(T) string) (func(T) bool, error) {
	if cond == "" {
		cond = FilterConditionEq
	}
	ok := false
	for _, a := range allowed {
		ok = ok || a == cond
	}
	if !ok {
		return nil, invalid("Condition %s is not supported for filter %s", cond, name)
	}
	if len(values) == 0 || (cond != FilterConditionIn && len(values) != 1) {
		return nil, invalid("Filter %s with condition %s takes %s", name, cond, map[bool]string{true: "one or more values", false: "exactly one value"}[cond == FilterConditionIn])
	}
	switch cond {
	case FilterConditionBeginsWith:
		return func(v T) bool { return strings.HasPrefix(field(v), values[0]) }, nil
	default:
		return func(v T) bool {
			got := field(v)
			for _, want := range values {
				if got == want {
					return true
				}
			}
			return false
		}, nil
	}
}

// UpdateHttpNamespace changes an HTTP namespace's description.
func (r *Registry) UpdateHttpNamespace(ctx context.Context, v Valid[UpdateHttpNamespaceRequest]) (*UpdateHttpNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.UpdaterRequestId = nil
	id, err := r.updateNamespace(ctx, "UpdateHttpNamespace", NamespaceTypeHttp, deref(req.Id), deref(req.UpdaterRequestId), h, func(ns *Namespace) {
		if req.Namespace.Description != nil {
			ns.Description = req.Namespace.Description
		}
	})
	if err != nil {
		return nil, err
	}
	return &UpdateHttpNamespaceResponse{OperationId: id}, nil
}

// UpdatePrivateDnsNamespace changes a private DNS namespace's description
// and SOA TTL.
func (r *Registry) UpdatePrivateDnsNamespace(ctx context.Context, v Valid[UpdatePrivateDnsNamespaceRequest]) (*UpdatePrivateDnsNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.UpdaterRequestId = nil
	id, err := r.updateNamespace(ctx, "UpdatePrivateDnsNamespace", NamespaceTypeDnsPrivate, deref(req.Id), deref(req.UpdaterRequestId), h, func(ns *Namespace) {
		if req.Namespace.Description != nil {
			ns.Description = req.Namespace.Description
		}
		if p := req.Namespace.Properties; p != nil && p.DnsProperties != nil && p.DnsProperties.SOA != nil {
			setSOATTL(ns, p.DnsProperties.SOA.TTL)
		}
	})
	if err != nil {
		return nil, err
	}
	return &UpdatePrivateDnsNamespaceResponse{OperationId: id}, nil
}

// UpdatePublicDnsNamespace changes a public DNS namespace's description
// and SOA TTL.
func (r *Registry) UpdatePublicDnsNamespace(ctx context.Context, v Valid[UpdatePublicDnsNamespaceRequest]) (*UpdatePublicDnsNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	h := *req
	h.UpdaterRequestId = nil
	id, err := r.updateNamespace(ctx, "UpdatePublicDnsNamespace", NamespaceTypeDnsPublic, deref(req.Id), deref(req.UpdaterRequestId), h, func(ns *Namespace) {
		if req.Namespace.Description != nil {
			ns.Description = req.Namespace.Description
		}
		if p := req.Namespace.Properties; p != nil && p.DnsProperties != nil && p.DnsProperties.SOA != nil {
			setSOATTL(ns, p.DnsProperties.SOA.TTL)
		}
	})
	if err != nil {
		return nil, err
	}
	return &UpdatePublicDnsNamespaceResponse{OperationId: id}, nil
}

// setSOATTL sets a DNS namespace's SOA TTL. The registry writes every
// DNS namespace with the properties that hold it; a stored one may lack
// them all the same (a restore does not refuse such a record).
func setSOATTL(ns *Namespace, ttl *int64) {
	if ns.Properties == nil {
		ns.Properties = &NamespaceProperties{}
	}
	if ns.Properties.DnsProperties == nil {
		ns.Properties.DnsProperties = &DnsProperties{}
	}
	ns.Properties.DnsProperties.SOA = &SOA{TTL: ttl}
}

func (r *Registry) updateNamespace(ctx context.Context, op string, typ NamespaceType, idOrARN, requestID string, hashOf any, change func(*Namespace)) (*string, error) {
	hash, err := requestHash(hashOf)
	if err != nil {
		return nil, err
	}
	st, err := r.newStamp()
	if err != nil {
		return nil, err
	}
	type result struct{ OperationId *string }
	res, err := idempotent(ctx, r, st, op, requestID, hash, st.opID, func(tx store.Tx) (*result, error) {
		rec, err := r.getNamespace(tx, idOrARN)
		if err != nil {
			return nil, err
		}
		if rec.Namespace.Type != typ {
			return nil, invalid("Namespace %s is of type %s, not %s", deref(rec.Namespace.Id), rec.Namespace.Type, typ)
		}
		change(&rec.Namespace)
		nsID := deref(rec.Namespace.Id)
		if err := putJSON(tx, NamespaceKey(nsID), rec); err != nil {
			return nil, err
		}
		opID, err := r.recordOp(tx, st, OperationTypeUpdateNamespace, map[string]string{"NAMESPACE": nsID})
		if err != nil {
			return nil, err
		}
		return &result{OperationId: opID}, nil
	})
	if err != nil {
		return nil, err
	}
	return res.OperationId, nil
}

// DeleteNamespace deletes a namespace that has no services.
func (r *Registry) DeleteNamespace(ctx context.Context, v Valid[DeleteNamespaceRequest]) (*DeleteNamespaceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	st, err := r.newStamp()
	if err != nil {
		return nil, err
	}
	var out DeleteNamespaceResponse
	err = r.update(ctx, func(tx store.Tx) error {
		rec, err := r.getNamespace(tx, deref(req.Id))
		if err != nil {
			return err
		}
		nsID := deref(rec.Namespace.Id)
		n, err := tx.Count(serviceNamesPrefix(nsID))
		if err != nil {
			return err
		}
		if n > 0 {
			return errorf(CodeResourceInUse, "Namespace %s has %d services; delete them first", nsID, n)
		}
		if err := tx.Delete(NamespaceKey(nsID)); err != nil {
			return err
		}
		if err := tx.Delete(namespaceNameKey(r.account, strings.ToLower(deref(rec.Namespace.Name)))); err != nil {
			return err
		}
		out.OperationId, err = r.recordOp(tx, st, OperationTypeDeleteNamespace, map[string]string{"NAMESPACE": nsID})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
