package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	weftcloudmap "github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// countingStore counts the reads its transactions make through
// Unguarded, which only the quota checks use.
type countingStore struct {
	store.Store
	reads *int
}

func (s countingStore) Update(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(countingTx{tx, s.reads}) })
}

type countingTx struct {
	store.Tx
	reads *int
}

func (t countingTx) Unguarded() store.Reader { return countingReader{t.Tx.Unguarded(), t.reads} }

type countingReader struct {
	store.Reader
	reads *int
}

func (r countingReader) List(prefix, after string, limit int) ([]store.KV, error) {
	*r.reads++
	return r.Reader.List(prefix, after, limit)
}

func (r countingReader) Count(prefix string) (int, error) {
	*r.reads++
	return r.Reader.Count(prefix)
}

// TestBenchQuotas: with the bench's Cloud Map quotas, a registration
// does not walk its namespace's services for a quota: it counts its own
// service's instances (instancesPerService keeps its default), nothing
// else. A namespace quota raised instead of off would walk them.
func TestBenchQuotas(t *testing.T) {
	_, benchCM, err := benchQuotas()
	if err != nil {
		t.Fatal(err)
	}
	raised, err := weftcloudmap.ParseLimits("instancesPerNamespace=100000,servicesPerNamespace=100000", weftcloudmap.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	const services = 5
	tests := []struct {
		name   string
		limits *weftcloudmap.Limits
		reads  int // by the last registration
	}{
		{"bench", benchCM, 1},
		{"raised", &raised, 2 + services}, // its service, the namespace's list, each service
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			reads := 0
			r := weftcloudmap.NewRegistry(countingStore{st, &reads}, weftcloudmap.Config{Limits: tt.limits})
			ns, err := checked(ctx, r.CreateHttpNamespace, &weftcloudmap.CreateHttpNamespaceRequest{Name: ptr("bench")})
			if err != nil {
				t.Fatal(err)
			}
			op, err := checked(ctx, r.GetOperation, &weftcloudmap.GetOperationRequest{OperationId: ns.OperationId})
			if err != nil {
				t.Fatal(err)
			}
			for i := range services {
				svc, err := checked(ctx, r.CreateService, &weftcloudmap.CreateServiceRequest{Name: ptr(fmt.Sprintf("s%d", i)), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"])})
				if err != nil {
					t.Fatal(err)
				}
				reads = 0
				if _, err := checked(ctx, r.RegisterInstance, &weftcloudmap.RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr("i"),
					Attributes: map[string]string{weftcloudmap.AttrIPv4: "10.0.0.1"}}); err != nil {
					t.Fatal(err)
				}
			}
			if reads != tt.reads {
				t.Errorf("the last registration made %d quota reads, want %d", reads, tt.reads)
			}
		})
	}
}

// TestProxiesGOGC: -proxies-gogc sets this process's GOGC, but not for
// -floor, a plain-Go baseline.
func TestProxiesGOGC(t *testing.T) {
	tests := []struct {
		name         string
		gogc, floorN int
		want         int // the GOGC set; 0: none
	}{
		{"set", 400, 0, 400},
		{"not given", 0, 0, 0},
		{"floor", 400, 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := 0
			setProxiesGOGC(tt.gogc, tt.floorN, func(v int) int { got = v; return 100 })
			if got != tt.want {
				t.Errorf("GOGC set to %d, want %d (0: left alone)", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// checked validates in as a Go caller of the registry must, and calls op
// with it.
func checked[In, Out any](ctx context.Context, op func(context.Context, weftcloudmap.Valid[In]) (*Out, error), in *In) (*Out, error) {
	v, err := weftcloudmap.Check(in)
	if err != nil {
		return nil, err
	}
	return op(ctx, v)
}
