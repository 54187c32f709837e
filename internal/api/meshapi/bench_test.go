package meshapi_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// The API benchmarks: Describe, List and durable Create over real HTTP
// (keep-alive connections to a 127.0.0.1 listener) from concurrent clients,
// on a bbolt store that fsyncs every commit; and UpdateRoute, one at a time
// without a socket or fsync. Results and the commands are in
// docs/bench/api.md. Clients are plain net/http, so that the CPU the
// benchmark measures is mostly the server's.

// benchClients is how many goroutines send requests at once.
const benchClients = 32

type benchServer struct {
	url    string
	client *http.Client
}

func newBenchServer(b *testing.B) *benchServer {
	b.Helper()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return newBenchServerOn(b, st)
}

// newBenchServerOn serves the API on st.
func newBenchServerOn(b *testing.B, st store.Store) *benchServer {
	b.Helper()
	limits := appmesh.DefaultLimits()
	limits.VirtualNodesPerMesh = 0 // no limit: Create makes b.N nodes
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &api.Handler{AppMesh: meshapi.New(ops.New(st, ops.Config{Region: "us-east-1", Limits: &limits}, log),
		meshapi.Config{DefaultAccount: "111122223333"}, log)}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients}
	b.Cleanup(tr.CloseIdleConnections)
	return &benchServer{url: srv.URL, client: &http.Client{Transport: tr}}
}

func (s *benchServer) do(b *testing.B, method, path string, body []byte) {
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("%s %s: %d", method, path, resp.StatusCode)
	}
}

// nodeBody is the tutorial's blue node: listeners, Cloud Map discovery, a
// JSON access log and a backend.
func nodeBody(b *testing.B, name string) []byte {
	raw, err := os.ReadFile("../../../test/tutorial/testdata/02c-blue-node.json")
	if err != nil {
		b.Fatal(err)
	}
	return bytes.Replace(raw, []byte(`"blue"`), []byte(`"`+name+`"`), 1)
}

// run sends b.N requests from benchClients goroutines and reports the
// throughput and latency percentiles.
func run(b *testing.B, req func(i int64)) {
	b.SetParallelism(max(1, benchClients/runtime.GOMAXPROCS(0)))
	var (
		mu   sync.Mutex
		all  []time.Duration
		next atomic.Int64
	)
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var lat []time.Duration
		for pb.Next() {
			t0 := time.Now()
			req(next.Add(1))
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(float64(len(all))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	// CPU per request (server and clients together) does not depend on
	// what else the machine runs: it bounds the throughput of a quiet one.
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-µs/req")
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkAPI(b *testing.B) {
	b.Run("Describe", func(b *testing.B) {
		s := newBenchServer(b)
		s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
		s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", nodeBody(b, "blue"))
		run(b, func(int64) { s.do(b, "GET", "/v20190125/meshes/bench/virtualNodes/blue", nil) })
	})
	b.Run("List200", func(b *testing.B) {
		s := newBenchServer(b)
		s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
		for i := range 200 {
			s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", nodeBody(b, fmt.Sprintf("node-%03d", i)))
		}
		// One page of App Mesh's largest size: 100 of the 200 nodes.
		run(b, func(int64) { s.do(b, "GET", "/v20190125/meshes/bench/virtualNodes?limit=100", nil) })
	})
	b.Run("Create", func(b *testing.B) {
		s := newBenchServer(b)
		s.do(b, "PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
		// Like the SDK, send a client token with every create.
		body := append([]byte(`{"clientToken":"token-NAME",`), nodeBody(b, "NAME")[1:]...)
		run(b, func(i int64) {
			name := fmt.Sprintf("n%09d", i)
			s.do(b, "PUT", "/v20190125/meshes/bench/virtualNodes", bytes.ReplaceAll(body, []byte("NAME"), []byte(name)))
		})
	})
}

// BenchmarkUpdateRoute is one UpdateRoute at a time (the tutorial's color
// route, its weights changing, a fresh client token with each as the SDK
// sends) served by the handler without a socket, on a bbolt store that
// does not fsync: the server's own work per write (decode, validate, the
// transaction, encode), which fsync and the network hide in Create above.
func BenchmarkUpdateRoute(b *testing.B) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)
	h := meshapi.New(ops.New(st, ops.Config{Region: "us-east-1"}, log), meshapi.Config{DefaultAccount: "111122223333"}, log)
	serve := func(method, path string, body []byte) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, bytes.NewReader(body)))
		if w.Code != http.StatusOK {
			b.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
	}
	const (
		listeners = `"listeners":[{"portMapping":{"port":80,"protocol":"http"}}]`
		route     = `{"clientToken":"%s","spec":{"priority":1,"httpRoute":{"match":{"method":"GET","port":80,"prefix":"/"},` +
			`"action":{"weightedTargets":[{"port":80,"virtualNode":"green","weight":%d},{"port":80,"virtualNode":"yellow","weight":1}]}}}}`
	)
	serve("PUT", "/v20190125/meshes", []byte(`{"meshName":"color-mesh"}`))
	for _, n := range []string{"green", "yellow"} {
		serve("PUT", "/v20190125/meshes/color-mesh/virtualNodes", []byte(`{"virtualNodeName":"`+n+`","spec":{`+listeners+`}}`))
	}
	serve("PUT", "/v20190125/meshes/color-mesh/virtualRouters", []byte(`{"virtualRouterName":"color-router","spec":{`+listeners+`}}`))
	serve("PUT", "/v20190125/meshes/color-mesh/virtualRouter/color-router/routes",
		fmt.Appendf([]byte(`{"routeName":"color-route",`), route[1:], "create", 4))
	b.ReportAllocs()
	cpu0, n := cpuTime(), 0
	for ; b.Loop(); n++ {
		serve("PUT", "/v20190125/meshes/color-mesh/virtualRouter/color-router/routes/color-route",
			fmt.Appendf(nil, route, fmt.Sprintf("token-%09d", n), 1+n%5))
	}
	// CPU per write (the commit goroutine and the GC included) moves less
	// than ns/op when other work shares the machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "cpu-µs/op")
}
