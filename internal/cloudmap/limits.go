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
	InstancesPerNamespace       int // on etcd, concurrent registrations may pass it by a few (roomForInstance)
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
	return quota.ParseOver(s, base, (*Limits).fields)
}

// The quota checks run in the transaction that creates the resource,
// before its writes, and count what is stored. The store commits that
// transaction only if nothing it counted has changed since (etcd's commit
// compares the counted ranges; bolt runs one writer at a time), so
// concurrent creates cannot pass a quota together; the exception is a
// namespace's instances on etcd, a bound that concurrent registrations
// may pass by a few (roomForInstance says why). What AWS's API answers
// with ResourceLimitExceeded is refused at once here too, asynchronous
// operations included: no operation is recorded for it.

func exceeded(format string, args ...any) *Error {
	return errorf(CodeResourceLimitExceeded, format, args...)
}

// roomForNamespace fails when the account's namespaces fill their quota,
// counted through quota.Reader: at the default (50) a bound on etcd.
func (r *Registry) roomForNamespace(tx store.Tx) error {
	max := r.limits.Namespaces
	if max <= 0 {
		return nil
	}
	n, err := quota.Reader(tx, max).Count(namespaceNamesPrefix(r.account))
	if err != nil {
		return err
	}
	if n >= max {
		return exceeded("The account has %d namespaces, its quota: delete one before creating another", n)
	}
	return nil
}

// roomForService fails when a namespace's services fill their quota,
// counted through quota.Reader: at the default (2,000) a bound on etcd.
func (r *Registry) roomForService(tx store.Tx, nsID string) error {
	max := r.limits.ServicesPerNamespace
	if max <= 0 {
		return nil
	}
	n, err := quota.Reader(tx, max).Count(serviceNamesPrefix(nsID))
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
//
// It counts with unguarded reads (store.Tx.Unguarded), which the commit
// does not compare. Guarded, the counts made a registration depend on
// every instance of the namespace: registrations in different services
// conflicted with each other and with every health update in the
// namespace, and past etcd's compare limit (100 keys) with any write at
// all. Now a registration conflicts only on its own service, as it did
// before there were quotas:
//
//   - The service's count stays exact: every write of an instance
//     (register, deregister, health) also writes its service's record,
//     which the registration reads guarded (getService), so a concurrent
//     change to the service's instances fails its commit and it runs
//     again on a snapshot that has it.
//   - The namespace's count is a bound, not exact on etcd: registrations
//     in different services that are in flight at once (from snapshot to
//     commit, on any replica) each count without the others' instances,
//     and may pass the quota together, by at most their number less one.
//     On bolt, writes run one at a time and the count is exact.
//
// Neither alternative keeps both: a count kept in each service's record
// is summed over the same reads of every service; one kept in the
// namespace's record is written by every registration, which would all
// conflict on it again. Without a mirror of the store (etcd.Store's),
// the namespace's count is one read request per service of the
// namespace, until the quota is reached.
func (r *Registry) roomForInstance(tx store.Tx, nsID, srvID string) error {
	loose := tx.Unguarded()
	if max := r.limits.InstancesPerService; max > 0 {
		n, err := loose.Count(InstancesPrefix(srvID))
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
	services, err := loose.List(serviceNamesPrefix(nsID), "", 0)
	if err != nil {
		return err
	}
	total := 0
	for _, kv := range services {
		n, err := loose.Count(InstancesPrefix(string(kv.Value)))
		if err != nil {
			return err
		}
		if total += n; total >= max {
			return exceeded("Namespace %s has %d instances, its quota: deregister one before registering another", nsID, total)
		}
	}
	return nil
}
