package cloudmap

import (
	"context"
	"fmt"
	"testing"
	"time"

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
