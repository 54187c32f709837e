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
	ns, err := r.CreateHttpNamespace(ctx, &CreateHttpNamespaceRequest{Name: ptr("ns")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := r.GetOperation(ctx, &GetOperationRequest{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := r.CreateService(ctx, &CreateServiceRequest{Name: ptr("svc"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"])})
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
				_, err := r.RegisterInstance(ctx, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr(id),
					CreatorRequestId: ptr("reg-" + id), Attributes: map[string]string{AttrIPv4: "10.0.0.1", AttrPort: "80"}})
				return err
			},
			func() error {
				_, err := r.DeregisterInstance(ctx, &DeregisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr(id)})
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

// TestQuotaConcurrentOnEtcd: registrations racing from four replicas of
// one etcd store never pass an instance quota together, of a service or
// of a namespace. In a namespace they race in different services, so
// nothing but the counted ranges ties them: the count is read in the
// transaction that writes, and etcd's commit refuses a transaction whose
// counted range changed. (Registrations in one service also conflict on
// the service's record, which they all write.)
func TestQuotaConcurrentOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	const max, writers = 2, 16
	tests := []struct {
		name     string
		limits   Limits
		services int
	}{
		{"service", Limits{InstancesPerService: max}, 1},
		{"namespace", Limits{InstancesPerNamespace: max}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			var regs [4]*Registry
			for i := range regs {
				octx, cancel := context.WithTimeout(ctx, 30*time.Second)
				st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: "/quota-" + tt.name})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				regs[i] = NewRegistry(st, Config{Limits: &tt.limits})
			}
			ns, err := regs[0].CreateHttpNamespace(ctx, &CreateHttpNamespaceRequest{Name: ptr("ns")})
			if err != nil {
				t.Fatal(err)
			}
			op, err := regs[0].GetOperation(ctx, &GetOperationRequest{OperationId: ns.OperationId})
			if err != nil {
				t.Fatal(err)
			}
			// More operations than a registration's pruning reads
			// (pruneBatch, and as many more as the keys it writes): with
			// fewer, it reads to the end of the operations and any two
			// registrations conflict there, serialised whatever the
			// quota check does.
			for i := range 2 * pruneBatch {
				if _, err := regs[0].CreateHttpNamespace(ctx, &CreateHttpNamespaceRequest{Name: ptr(fmt.Sprintf("other%d", i))}); err != nil {
					t.Fatal(err)
				}
			}
			var services []*string
			for i := range tt.services {
				svc, err := regs[0].CreateService(ctx, &CreateServiceRequest{Name: ptr(fmt.Sprintf("s%d", i)), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"])})
				if err != nil {
					t.Fatal(err)
				}
				services = append(services, svc.Service.Id)
			}

			errs := make(chan error, writers)
			start := make(chan struct{}) // releases the writers together
			var wg sync.WaitGroup
			for i := range writers {
				wg.Go(func() { // ends when its RegisterInstance returns; waited for by wg
					<-start
					_, err := regs[i%len(regs)].RegisterInstance(ctx, &RegisterInstanceRequest{ServiceId: services[i%len(services)],
						InstanceId: ptr(fmt.Sprintf("i%d", i)), Attributes: map[string]string{AttrIPv4: "10.0.0.1"}})
					errs <- err
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			ok, refused := 0, 0
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
			stored := 0
			for _, svc := range services {
				out, err := regs[1].GetService(ctx, &GetServiceRequest{Id: svc})
				if err != nil {
					t.Fatal(err)
				}
				stored += int(*out.Service.InstanceCount)
			}
			t.Logf("%d registered, %d refused over the quota of %d", ok, refused, max)
			if stored > max || stored != ok || refused == 0 {
				t.Errorf("%d instances stored, %d registrations answered success, %d ResourceLimitExceeded; want at most %d stored, all of them answered success, and some refused", stored, ok, refused, max)
			}
		})
	}
}
