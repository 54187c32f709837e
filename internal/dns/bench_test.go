package dns_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// cpuTime is the CPU (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkQuery measures A queries over UDP for a MULTIVALUE service of
// 10 instances (8 answers each), from 8 goroutines per CPU, each on its
// own socket. The clients run in the same process.
func BenchmarkQuery(b *testing.B) {
	w := start(b, filepath.Join(b.TempDir(), "weft.db"), dns.Config{})
	nsID := w.namespace("colors.local", 0)
	red := w.service(nsID, "red", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
	for i := range 10 {
		w.register(red, fmt.Sprint("task-", i), map[string]string{cloudmap.AttrIPv4: fmt.Sprintf("10.0.0.%d", i+1)})
	}
	w.sync()
	addr := w.dns.Addr()
	b.SetParallelism(8)
	b.ReportAllocs()
	cpu0, t0 := cpuTime(), time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &miekg.Client{Net: "udp", Timeout: 5 * time.Second}
		conn, err := c.Dial(addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		m := new(miekg.Msg)
		m.SetQuestion("red.colors.local.", miekg.TypeA)
		for pb.Next() {
			r, _, err := c.ExchangeWithConn(m, conn)
			if err != nil || len(r.Answer) != 8 {
				b.Errorf("query: %v %v", err, r)
				return
			}
		}
	})
	b.StopTimer()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "answers/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/answer")
}

// BenchmarkRegisterToDNS measures how long a registration takes to show in
// DNS answers: each iteration re-registers one instance of a service at a
// new address (RegisterInstance, fsync'd), waits for the DNS server to
// apply it and checks with one UDP query that the answer is that address.
// ns/op is that latency.
func BenchmarkRegisterToDNS(b *testing.B) {
	path := filepath.Join(b.TempDir(), "weft.db")
	// The store fsyncs every commit, as weft server's does.
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := dns.Listen("127.0.0.1:0", dns.Config{}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, st) }() // ends with cancel below
	defer func() {
		cancel()
		<-done
		st.Close()
	}()
	w := &weft{t: b, st: st, reg: cloudmap.NewRegistry(st, cloudmap.Config{}), dns: srv}
	nsID := w.namespace("bench.local", 0)
	svc := w.service(nsID, "web", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
	w.register(svc, "i", map[string]string{cloudmap.AttrIPv4: "10.255.255.255"})
	w.sync()

	c := &miekg.Client{Net: "udp", Timeout: 5 * time.Second}
	conn, err := c.Dial(srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	m := new(miekg.Msg)
	m.SetQuestion("web.bench.local.", miekg.TypeA)
	var worst, afterCommit time.Duration
	b.ResetTimer()
	for i := range b.N {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		t0 := time.Now()
		w.register(svc, "i", map[string]string{cloudmap.AttrIPv4: ip})
		committed := time.Now()
		// Wait for the server's index, not by polling: a client spinning
		// on queries would take the CPU the server needs to catch up.
		if err := srv.WaitRevision(ctx, st.Revision()); err != nil {
			b.Fatal(err)
		}
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*miekg.A).A.String() != ip {
			b.Fatalf("after WaitRevision, answer %v %v, want %s", r, err, ip)
		}
		worst = max(worst, time.Since(t0))
		afterCommit += time.Since(committed)
	}
	b.StopTimer()
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
	// The part of the latency after RegisterInstance returned: watch,
	// index update and the first query that sees it.
	b.ReportMetric(float64(afterCommit.Microseconds())/float64(b.N), "after-commit-µs")
}
