package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// On a replica that keeps a mirror of the store (it watches every key, as
// weft server does), registering and deregistering an instance is one
// etcd request, the commit: every read is answered by the mirror.
// Without it, the reads are requests of their own (logged, for the
// record).
func TestInstanceWritesOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: "/cloudmap"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := NewRegistry(st, Config{})
	ns, err := checked(ctx, r.CreateHttpNamespace, &CreateHttpNamespaceRequest{Name: ptr("ns")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := checked(ctx, r.GetOperation, &GetOperationRequest{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr("svc"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"])})
	if err != nil {
		t.Fatal(err)
	}
	member := c.Members[0].ClientURL
	n := 0
	writes := func() (ranges, txns [2]float64) {
		t.Helper()
		n++
		id := fmt.Sprintf("i%d", n)
		for i, fn := range []func() error{
			func() error {
				_, err := checked(ctx, r.RegisterInstance, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr(id),
					CreatorRequestId: ptr("reg-" + id), Attributes: map[string]string{AttrIPv4: "10.0.0.1", AttrPort: "80"}})
				return err
			},
			func() error {
				_, err := checked(ctx, r.DeregisterInstance, &DeregisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr(id)})
				return err
			},
		} {
			r0, x0 := etcdtest.Handled(t, member, "Range"), etcdtest.Handled(t, member, "Txn")
			if err := fn(); err != nil {
				t.Fatal(err)
			}
			ranges[i], txns[i] = etcdtest.Handled(t, member, "Range")-r0, etcdtest.Handled(t, member, "Txn")-x0
		}
		return ranges, txns
	}
	ranges, txns := writes()
	t.Logf("without a mirror: RegisterInstance %.0f Range and %.0f Txn requests, DeregisterInstance %.0f and %.0f", ranges[0], txns[0], ranges[1], txns[1])

	caughtUp := etcdtest.FollowAll(t, st)
	caughtUp()
	ranges, txns = writes()
	// A deregister's watch event may come before its commit's answer;
	// the watch then reads the deleted values in one more Txn.
	if ranges[0] != 0 || txns[0] != 1 || ranges[1] != 0 || txns[1] != 1 && txns[1] != 2 {
		t.Errorf("with a mirror: RegisterInstance %.0f Range and %.0f Txn requests, DeregisterInstance %.0f and %.0f; want 0 and 1 each (the commit)", ranges[0], txns[0], ranges[1], txns[1])
	}
}

// quotaReplicas opens n stores on one etcd prefix, as n weft replicas
// would, each with a registry of the given limits (nil: the defaults).
func quotaReplicas(t *testing.T, c *etcdtest.Cluster, prefix string, n int, limits *Limits) ([]*etcd.Store, []*Registry) {
	t.Helper()
	var stores []*etcd.Store
	var regs []*Registry
	for range n {
		octx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
		regs = append(regs, NewRegistry(st, Config{Limits: limits}))
	}
	return stores, regs
}

// quotaNamespace creates a namespace with the given services (custom
// health checks) and returns their ids. It first creates more operations
// than a registration's pruning reads (pruneBatch, and as many more as
// the keys it writes): with fewer, a registration reads to the end of the
// operations and any two conflict there, whatever the quota checks do.
func quotaNamespace(t *testing.T, r *Registry, services int) []*string {
	t.Helper()
	ctx := t.Context()
	ns, err := checked(ctx, r.CreateHttpNamespace, &CreateHttpNamespaceRequest{Name: ptr("ns")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := checked(ctx, r.GetOperation, &GetOperationRequest{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 * pruneBatch {
		if _, err := checked(ctx, r.CreateHttpNamespace, &CreateHttpNamespaceRequest{Name: ptr(fmt.Sprintf("other%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []*string
	for i := range services {
		svc, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr(fmt.Sprintf("s%d", i)), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"]),
			HealthCheckCustomConfig: &HealthCheckCustomConfig{}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, svc.Service.Id)
	}
	return ids
}

// TestRegistrationsDoNotConflictOnEtcd: with the default quotas,
// registrations into 20 services of one namespace, made at once through
// four replicas while health updates go on in five more services of the
// namespace, all commit on their first attempt: no conflict, and no
// commit guarded by the sequence key, although the namespace holds more
// instances than a transaction can compare. A registration conflicts
// only with writes to its own service, as before there were quotas
// (roomForInstance). The same with each replica keeping a mirror of the
// store, as weft server's do: first attempts mostly read from it.
func TestRegistrationsDoNotConflictOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	for _, mirrored := range []bool{false, true} {
		t.Run(fmt.Sprintf("mirrored=%v", mirrored), func(t *testing.T) {
			testRegistrationsDoNotConflict(t, c, mirrored)
		})
	}
}

func testRegistrationsDoNotConflict(t *testing.T, c *etcdtest.Cluster, mirrored bool) {
	ctx := t.Context()
	const services, quiet, each = 20, 5, 6
	stores, regs := quotaReplicas(t, c, fmt.Sprintf("/conflicts-%v", mirrored), 4, nil)
	ids := quotaNamespace(t, regs[0], services+quiet)
	register := func(r *Registry, srv *string, id string) error {
		_, err := checked(ctx, r.RegisterInstance, &RegisterInstanceRequest{ServiceId: srv, InstanceId: ptr(id),
			CreatorRequestId: ptr("reg-" + *srv + "-" + id), Attributes: map[string]string{AttrIPv4: "10.0.0.1"}})
		return err
	}
	for _, srv := range ids {
		for i := range each { // 150 instances in all, and as many live request ids
			if err := register(regs[0], srv, fmt.Sprintf("old%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var fns []func() error
	for i, srv := range ids {
		r := regs[i%len(regs)]
		if i < services {
			fns = append(fns, func() error { return register(r, srv, "new") })
			continue
		}
		fns = append(fns, func() error {
			return checkedErr(ctx, r.UpdateInstanceCustomHealthStatus, &UpdateInstanceCustomHealthStatusRequest{ServiceId: srv, InstanceId: ptr("old0"), Status: CustomHealthStatusUnhealthy})
		})
	}
	etcdtest.WritesDoNotConflict(t, stores, mirrored, fns)
}

// TestQuotaConcurrentOnEtcd: registrations racing from four replicas of
// one etcd store never pass a service's instance quota together: they
// all write the service's record, which each read, so their commits
// conflict. A namespace's quota is a bound they may pass together, by
// fewer than the registrations in flight at once (roomForInstance): in
// waves of four registrations into four services, by three at most.
func TestQuotaConcurrentOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	tests := []struct {
		name             string
		limits           Limits
		services         int
		max, waves, wave int
	}{
		{"service", Limits{InstancesPerService: 2}, 1, 2, 1, 16},
		{"namespace", Limits{InstancesPerNamespace: 6}, 4, 6, 5, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			_, regs := quotaReplicas(t, c, "/quota-"+tt.name, 4, &tt.limits)
			services := quotaNamespace(t, regs[0], tt.services)
			ok, refused := 0, 0
			for w := range tt.waves {
				errs := make(chan error, tt.wave)
				start := make(chan struct{}) // releases the wave's writers together
				var wg sync.WaitGroup
				for i := range tt.wave {
					wg.Go(func() { // ends when its RegisterInstance returns; waited for by wg
						<-start
						_, err := checked(ctx, regs[i%len(regs)].RegisterInstance, &RegisterInstanceRequest{ServiceId: services[i%len(services)],
							InstanceId: ptr(fmt.Sprintf("w%di%d", w, i)), Attributes: map[string]string{AttrIPv4: "10.0.0.1"}})
						errs <- err
					})
				}
				close(start)
				wg.Wait()
				close(errs)
				for err := range errs {
					e, isAWS := AsError(err)
					switch {
					case err == nil:
						ok++
					case isAWS && e.Code == CodeResourceLimitExceeded:
						refused++
					case errors.Is(err, store.ErrConflict): // retries ran out: nothing written
					default:
						t.Errorf("register: %v", err)
					}
				}
			}
			stored := 0
			for _, svc := range services {
				out, err := checked(ctx, regs[1].GetService, &GetServiceRequest{Id: svc})
				if err != nil {
					t.Fatal(err)
				}
				stored += int(*out.Service.InstanceCount)
			}
			limit := tt.max
			if tt.name == "namespace" {
				limit += tt.wave - 1
			}
			t.Logf("%d registered, %d refused over the quota of %d", ok, refused, tt.max)
			if stored < tt.max || stored > limit || stored != ok || refused == 0 {
				t.Errorf("%d instances stored, %d registrations answered success, %d ResourceLimitExceeded; want %d to %d stored, all of them answered success, and some refused", stored, ok, refused, tt.max, limit)
			}
		})
	}
}
