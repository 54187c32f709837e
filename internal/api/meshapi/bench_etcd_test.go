package meshapi_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// BenchmarkAPIStores runs Describe and durable Create on bbolt and on etcd
// (one local member; three members on this machine) in one run, so that
// the stores compare on the same load. Results: docs/bench/ha.md.
func BenchmarkAPIStores(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"bolt", func(b *testing.B) store.Store {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}},
		{"etcd1", func(b *testing.B) store.Store { return openEtcd(b, 1) }},
		{"etcd3", func(b *testing.B) store.Store { return openEtcd(b, 3) }},
	}
	for _, sc := range stores {
		b.Run(sc.name+"/Describe", func(b *testing.B) {
			s := newBenchServerOn(b, sc.open(b))
			s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
			s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", nodeBody(b, "blue"))
			run(b, func(int64) { s.do(b, "GET", "/v20190125/meshes/bench/virtualNodes/blue", nil) })
		})
		b.Run(sc.name+"/Create", func(b *testing.B) {
			s := newBenchServerOn(b, sc.open(b))
			s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
			body := append([]byte(`{"clientToken":"token-NAME",`), nodeBody(b, "NAME")[1:]...)
			run(b, func(i int64) {
				name := fmt.Sprintf("n%09d", i)
				s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", bytes.ReplaceAll(body, []byte("NAME"), []byte(name)))
			})
		})
	}
}

func openEtcd(b *testing.B, members int) store.Store {
	c := etcdtest.Start(b, members)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := etcd.Open(ctx, etcd.Options{Endpoints: c.Endpoints()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}
