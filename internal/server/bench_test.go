package server

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/store/bolt"
)

// BenchmarkDescribeLimits is DescribeVirtualNode through the API listener
// as Run builds it (timeouts and the connection cap: "limits") next to a
// bare http.Server on a bare listener ("bare"), in one run, from 32
// keep-alive clients.
func BenchmarkDescribeLimits(b *testing.B) {
	node, err := os.ReadFile("../../test/tutorial/testdata/02c-blue-node.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"bare", "limits", "bare", "limits"} {
		b.Run(mode, func(b *testing.B) {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			reg := prometheus.NewRegistry()
			cfg := Config{Region: "us-east-1", AccountID: "111122223333"}
			sec, err := newSecurity(b.Context(), st, cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer sec.stop()
			h := newHandler(st, cfg, slog.New(slog.DiscardHandler), reg, nil, sec, nil, nil)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			url := "http://" + ln.Addr().String()
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			if mode == "limits" {
				srv = newAPIServer(h, APILimits{})
				ln = newCapListener(ln, APILimits{}, newAPIMetrics(reg))
			}
			done := make(chan struct{})
			go func() { defer close(done); srv.Serve(ln) }() // ends with Close below
			defer func() { srv.Close(); <-done }()
			tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			do := func(method, path string, body []byte) {
				req, _ := http.NewRequest(method, url+path, bytes.NewReader(body))
				resp, err := c.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("%s %s: %d", method, path, resp.StatusCode)
				}
			}
			do("PUT", "/v20190125/meshes", []byte(`{"meshName":"bench"}`))
			do("PUT", "/v20190125/meshes/bench/virtualNodes", node)
			b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
			var ru0 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					do("GET", "/v20190125/meshes/bench/virtualNodes/blue", nil)
				}
			})
			b.StopTimer()
			elapsed := time.Since(start)
			var ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/req")
		})
	}
}
