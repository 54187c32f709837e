package cloudmap

import (
	"github.com/weftmesh/weft/internal/quota"
	"github.com/weftmesh/weft/internal/store"
)

// Limits are Cloud Map's quotas. Going past a count of resources is
// ResourceLimitExceeded; past the custom attributes of an instance,
// InvalidInput (the request, not the account, is at fault). A field of
// zero or less means no limit; Config's nil Limits means DefaultLimits.
type Limits struct {
	Namespaces                  int // per account (AWS: per account and Region; a weft serves one Region)
	ServicesPerNamespace        int
	InstancesPerNamespace       int
	InstancesPerService         int
	CustomAttributesPerInstance int
}

// DefaultLimits returns Cloud Map's default quotas, as the quotas page of
// the AWS Cloud Map Developer Guide ("AWS Cloud Map service quotas") and
// the Service Quotas console give them: 50 namespaces per Region and
// account, 2,000 instances registered in one namespace, 1,000 in one
// service, 30 custom attributes on one instance. AWS lets the first two
// be raised on request and not the last two; weft lets all be set.
//
// ServicesPerNamespace is weft's own: AWS has no quota on services, but
// every resource a client can create must be bounded here. 2,000 is the
// instances a namespace may hold, so that each service can have one (the
// guide's early editions gave 2,000 as a number of services per
// namespace; later ones say it is instances).
//
// Not here: tags per resource (50) and attributes per service (30), fixed
// like the model's bounds; the guide's 8 DNS namespaces of one name per
// Region, since a weft's namespace names are unique.
func DefaultLimits() Limits {
	return Limits{
		Namespaces:                  50,
		ServicesPerNamespace:        2000,
		InstancesPerNamespace:       2000,
		InstancesPerService:         1000,
		CustomAttributesPerInstance: 30,
	}
}

// fields names each limit as ParseLimits and String write it.
func (l *Limits) fields() []quota.Field {
	return []quota.Field{
		{Name: "namespaces", Value: &l.Namespaces},
		{Name: "servicesPerNamespace", Value: &l.ServicesPerNamespace},
		{Name: "instancesPerNamespace", Value: &l.InstancesPerNamespace},
		{Name: "instancesPerService", Value: &l.InstancesPerService},
		{Name: "customAttributesPerInstance", Value: &l.CustomAttributesPerInstance},
	}
}

// String writes the limits in the form ParseLimits reads.
func (l Limits) String() string { return quota.Format(l.fields()) }

// ParseLimits applies "name=value,..." to base and returns the result, so
// a flag can raise one quota and keep the defaults of the others.
func ParseLimits(s string, base Limits) (Limits, error) {
	out := base
	if err := quota.Parse(s, out.fields()); err != nil {
		return base, err
	}
	return out, nil
}

// The quota checks run in the transaction that creates the resource,
// before its writes, and count what is stored. The store commits that
// transaction only if nothing it counted has changed since (etcd's commit
// compares the counted ranges; bolt runs one writer at a time), so
// concurrent creates cannot pass a quota together. What AWS's API answers
// with ResourceLimitExceeded is refused at once here too, asynchronous
// operations included: no operation is recorded for it.

func exceeded(format string, args ...any) *Error {
	return errorf(CodeResourceLimitExceeded, format, args...)
}

// roomForNamespace fails when the account's namespaces fill their quota.
func (r *Registry) roomForNamespace(tx store.Tx) error {
	max := r.limits.Namespaces
	if max <= 0 {
		return nil
	}
	n, err := tx.Count(namespaceNamesPrefix(r.account))
	if err != nil {
		return err
	}
	if n >= max {
		return exceeded("The account has %d namespaces, its quota: delete one before creating another", n)
	}
	return nil
}

// roomForService fails when a namespace's services fill their quota.
func (r *Registry) roomForService(tx store.Tx, nsID string) error {
	max := r.limits.ServicesPerNamespace
	if max <= 0 {
		return nil
	}
	n, err := tx.Count(serviceNamesPrefix(nsID))
	if err != nil {
		return err
	}
	if n >= max {
		return exceeded("Namespace %s has %d services, its quota: delete one before creating another", nsID, n)
	}
	return nil
}

// roomForInstance fails when a new instance of service srvID, in
// namespace nsID, would pass the quota of the service or the namespace.
// The namespace's count is the sum of its services' (bounded by
// ServicesPerNamespace): no other key says which instances are in it.
func (r *Registry) roomForInstance(tx store.Tx, nsID, srvID string) error {
	if max := r.limits.InstancesPerService; max > 0 {
		n, err := tx.Count(InstancesPrefix(srvID))
		if err != nil {
			return err
		}
		if n >= max {
			return exceeded("Service %s has %d instances, its quota: deregister one before registering another", srvID, n)
		}
	}
	max := r.limits.InstancesPerNamespace
	if max <= 0 {
		return nil
	}
	services, err := tx.List(serviceNamesPrefix(nsID), "", 0)
	if err != nil {
		return err
	}
	total := 0
	for _, kv := range services {
		n, err := tx.Count(InstancesPrefix(string(kv.Value)))
		if err != nil {
			return err
		}
		if total += n; total >= max {
			return exceeded("Namespace %s has %d instances, its quota: deregister one before registering another", nsID, total)
		}
	}
	return nil
}
