package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	"github.com/weftmesh/weft/internal/procstat"
)

// -handshakes: what a full mutual-TLS handshake costs each proxy that
// terminates one (docs/bench/proxy.md, round 27). Only the "mTLS in"
// paths are set up: one weft proxy (-weft, -weft-args, -weft-env), with
// -weft-b the same sidecar run by that binary (-weft-b-args,
// -weft-b-env), and haproxy, with the same certificates (ECDSA P-256, the
// client's required and checked against the mesh CA; weft also matches
// its SPIFFE URI SAN). Each handshake is a new connection from a client
// without a session cache (the fixed-rate generator's clientTLS), one GET
// on it, then close. In turn on each path, -rounds times: n sequential
// handshakes, whose proxy CPU time is read from /proc, then bursts of
// -conns concurrent ones (the connections a fixed-rate slice opens at its
// start). Then, optionally: short fixed-rate slices as the whole run's
// (-handshake-slices, each turn after -handshake-slice-idle), bursts after
// the proxies have been idle (-handshake-cold), and a CPU profile of the
// -weft proxy (-profile).
//
//	proxybench -weft ./weft -weft-b ./weft-proxy -app ./weft -handshakes 2000 -rounds 5

// hsTarget is one path of the handshake run and its counts.
type hsTarget struct {
	target
	cpu      time.Duration   // the proxy's, over the sequential handshakes
	seq      int             // sequential handshakes done
	seqWall  time.Duration   // their wall time
	conn     []time.Duration // each burst connection's dial to response
	burst    []time.Duration // each burst's start to its last response
	cold     coldBursts      // with -handshake-cold
	genCPU   time.Duration   // the generator's (this process's), over the sequential handshakes
	sl       slicesRun       // with -handshake-slices
	errs     int
	curves   map[string]int // negotiated key exchange, by name
	versions map[string]int
}

// coldBursts are the bursts that came after the proxies had been idle.
type coldBursts struct {
	conn, burst []time.Duration
	cpu         time.Duration // the proxy's, over the bursts
	faults      int64         // the proxy's minor page faults, over the bursts
	n           int           // bursts
}

// slicesRun is what short fixed-rate slices through a path add up to:
// each opens -conns connections at its start, as the whole run's slices.
type slicesRun struct {
	lat    []time.Duration // every request's, pooled
	first  []time.Duration // each slice's first 2 x -conns scheduled requests'
	p99    []time.Duration // each slice's p99
	errs   int
	faults int64 // the proxy's minor page faults over the slices
}

// handshakeRun sets up the mTLS-in paths and measures n full handshakes
// and bursts bursts on each, then prints the table. With -profile it
// then takes a CPU profile of the -weft proxy over n more sequential
// handshakes.
func (b *bench) handshakeRun(ctx context.Context, o opts, n, bursts int, idle time.Duration, coldN, slicesN int, sliceDur, sliceIdle time.Duration) {
	app := b.startApp()
	xds := startXDS(ctx)
	k := newPKI(b.dir)
	var ts []*hsTarget
	add := func(name, bin, node string, envB bool, args []string) {
		p := freePort()
		xds.set(node, k.withMTLS(resources("ingress", p, "cds_ingress_bench_server_http_9080", app, true), true, false))
		var proc *os.Process
		if envB {
			proc = b.startProxyB(bin, node, xds.addr, args...)
		} else {
			proc = b.startProxy(bin, node, xds.addr, args...)
		}
		url := fmt.Sprintf("https://127.0.0.1:%d/", p)
		waitHTTP(url, k.clientTLS())
		ts = append(ts, &hsTarget{target: target{name, url, []*os.Process{proc}, k.clientTLS()}})
	}
	add("one weft proxy, mTLS in", o.weft, "mesh/bench/virtualNode/server-tls", false, o.aArgs)
	if o.weftB != "" {
		add("one weft proxy B, mTLS in", o.weftB, "mesh/bench/virtualNode/server-tls-b", true, o.bArgs)
	}
	pH := freePort()
	b.startHAProxyTLS(k, pH, app, true, false)
	urlH := fmt.Sprintf("https://127.0.0.1:%d/", pH)
	waitHTTP(urlH, k.clientTLS())
	ts = append(ts, &hsTarget{target: target{"haproxy, mTLS in", urlH, []*os.Process{b.procs[len(b.procs)-1].Process}, k.clientTLS()}})
	fmt.Print(machine(o.weft))
	fmt.Printf("-weft %s %s %s\n", o.weft, strings.Join(o.aArgs, " "), strings.Join(b.envA, " "))
	if o.weftB != "" {
		fmt.Printf("-weft-b %s %s %s\n", o.weftB, o.weftBArgs, strings.Join(b.envB, " "))
	}
	for _, t := range ts { // first handshakes: code run once, pools filled
		t.curves, t.versions = map[string]int{}, map[string]int{}
		for range 20 {
			_, _ = handshakeGET(t.url, t.tls)
		}
	}
	perRound, burstsPerRound := max(1, n/o.rounds), max(1, bursts/o.rounds)
	for range o.rounds {
		for _, t := range ts {
			t.sequential(perRound)
			for range burstsPerRound {
				time.Sleep(50 * time.Millisecond) // the last burst's connections closed
				t.conn, t.burst = t.burstOnce(o.conns, t.conn, t.burst)
			}
		}
	}
	fmt.Printf("load average after the run: %s\n", loadavg.String())
	// Short fixed-rate slices, in turn on each path, as the whole run's.
	for range slicesN {
		time.Sleep(sliceIdle)
		for _, t := range ts {
			f0 := procstat.MinorFaults(t.procs[0].Pid)
			lat, errs, _ := constantRate(t.url, o.rate, sliceDur, o.conns, t.tls)
			t.sl.faults += procstat.MinorFaults(t.procs[0].Pid) - f0
			t.sl.errs += errs
			t.sl.lat = append(t.sl.lat, lat...)
			t.sl.first = append(t.sl.first, lat[:min(len(lat), 2*o.conns)]...)
			sorted := slices.Sorted(slices.Values(lat))
			t.sl.p99 = append(t.sl.p99, quantile(sorted, 0.99))
		}
	}
	if slicesN > 0 {
		fmt.Printf("load average after the slices: %s\n", loadavg.String())
	}
	// Cold bursts: each after every proxy has been idle for idle, as
	// a fixed-rate slice finds a path's proxy after the other paths'
	// slices.
	for range coldN {
		time.Sleep(idle)
		for _, t := range ts {
			c := &t.cold
			cpu0, f0 := cpuTime(t.procs), procstat.MinorFaults(t.procs[0].Pid)
			c.conn, c.burst = t.burstOnce(o.conns, c.conn, c.burst)
			c.cpu += cpuTime(t.procs) - cpu0
			c.faults += procstat.MinorFaults(t.procs[0].Pid) - f0
			c.n++
		}
	}
	if coldN > 0 {
		fmt.Printf("load average after the cold bursts: %s\n", loadavg.String())
	}
	fmt.Println()
	printHandshakes(ts, o.conns)
	if slicesN > 0 {
		printSlices(ts, o, sliceDur, sliceIdle)
	}
	if coldN > 0 {
		printCold(ts, o.conns, idle)
	}
	if o.profile != "" {
		b.profileHandshakes(ts[0], n, o.profile)
	}
}

// hsResult is one connection's outcome.
type hsResult struct {
	curve, version string
}

// handshakeGET opens a connection to url, completes a full TLS handshake
// with cfg, sends one GET and reads the answer, then closes.
func handshakeGET(url string, cfg *tls.Config) (hsResult, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/")
	d := net.Dialer{Timeout: 10 * time.Second}
	tc, err := tls.DialWithDialer(&d, "tcp", host, cfg)
	if err != nil {
		return hsResult{}, err
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	cs := tc.ConnectionState()
	r := hsResult{curve: cs.CurveID.String(), version: tls.VersionName(cs.Version)}
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+serverSNI+"\r\n\r\n"); err != nil {
		return r, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return r, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("status %d", resp.StatusCode)
	}
	return r, nil
}

// done is the number of handshakes counted without error.
func (t *hsTarget) done() int {
	n := 0
	for _, c := range t.curves {
		n += c
	}
	return n
}

func (t *hsTarget) count(r hsResult, err error) {
	if err != nil {
		t.errs++
		return
	}
	t.curves[r.curve]++
	t.versions[r.version]++
}

// sequential runs n handshakes one after another and adds the proxy's CPU
// time over them.
func (t *hsTarget) sequential(n int) {
	cpu0, gen0, t0 := cpuTime(t.procs), procstat.CPU(os.Getpid()), time.Now()
	for range n {
		t.count(handshakeGET(t.url, t.tls))
	}
	t.seqWall += time.Since(t0)
	t.cpu += cpuTime(t.procs) - cpu0
	t.genCPU += procstat.CPU(os.Getpid()) - gen0
	t.seq += n
}

// burstOnce runs size concurrent handshakes and returns conn with each
// one's latency (from the burst's start to its response) appended and
// burst with the burst's (to its last response).
func (t *hsTarget) burstOnce(size int, conn, burst []time.Duration) ([]time.Duration, []time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range size {
		wg.Add(1)
		go func() { // one connection of the burst; ends with its response or error
			defer wg.Done()
			r, err := handshakeGET(t.url, t.tls)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			t.count(r, err)
			if err == nil {
				conn = append(conn, d)
			}
		}()
	}
	wg.Wait()
	return conn, append(burst, time.Since(start))
}

// pct is the p-th percentile of the sorted xs in ms (tail.go's
// quantile), "-" if empty.
func pct(xs []time.Duration, p int) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", ms(quantile(xs, float64(p)/100)))
}

func printSlices(ts []*hsTarget, o opts, d, idle time.Duration) {
	fmt.Printf("\nFixed-rate slices of %s at %d requests/s over %d new connections, in turn, each turn after %s idle:\n\n| path | slices | p50 / p99 / max (ms) | first %d requests of a slice p50 / max (ms) | slices whose p99 is above haproxy's | minor faults per slice | errors |\n|---|---|---|---|---|---|---|\n",
		d, o.rate, o.conns, idle, 2*o.conns)
	h := ts[len(ts)-1] // haproxy
	for _, t := range ts {
		above := 0
		for i := range t.sl.p99 {
			if t.sl.p99[i] > h.sl.p99[i] {
				above++
			}
		}
		slices.Sort(t.sl.lat)
		slices.Sort(t.sl.first)
		fmt.Printf("| %s | %d | %s / %s / %s | %s / %s | %d | %d | %d |\n", t.name, len(t.sl.p99),
			pct(t.sl.lat, 50), pct(t.sl.lat, 99), pct(t.sl.lat, 100), pct(t.sl.first, 50), pct(t.sl.first, 100), above,
			t.sl.faults/int64(max(1, len(t.sl.p99))), t.sl.errs)
	}
}

func printCold(ts []*hsTarget, size int, idle time.Duration) {
	fmt.Printf("\nBursts of %d after %s idle:\n\n| path | bursts | proxy CPU per handshake (µs) | minor faults per burst | connection p50 / p99 / max (ms) | burst to last response p50 / max (ms) |\n|---|---|---|---|---|---|\n", size, idle)
	for _, t := range ts {
		c := t.cold
		slices.Sort(c.conn)
		slices.Sort(c.burst)
		fmt.Printf("| %s | %d | %.0f | %d | %s / %s / %s | %s / %s |\n", t.name, c.n,
			float64(c.cpu.Microseconds())/float64(max(1, c.n*size)), c.faults/int64(max(1, c.n)),
			pct(c.conn, 50), pct(c.conn, 99), pct(c.conn, 100), pct(c.burst, 50), pct(c.burst, 100))
	}
}

func printHandshakes(ts []*hsTarget, size int) {
	fmt.Printf("| path | handshakes | proxy CPU per handshake (µs) | generator CPU per handshake (µs) | sequential wall per handshake (ms) | burst of %d: connection p50 / p99 / max (ms) | burst to last response p50 / max (ms) | errors | key exchange | version |\n|---|---|---|---|---|---|---|---|---|---|\n", size)
	for _, t := range ts {
		slices.Sort(t.conn)
		slices.Sort(t.burst)
		q := pct
		fmt.Printf("| %s | %d | %.0f | %.0f | %.2f | %s / %s / %s | %s / %s | %d | %s | %s |\n", t.name, t.seq,
			float64(t.cpu.Microseconds())/float64(max(1, t.seq)), float64(t.genCPU.Microseconds())/float64(max(1, t.seq)), float64(t.seqWall.Microseconds())/1000/float64(max(1, t.seq)),
			q(t.conn, 50), q(t.conn, 99), q(t.conn, 100), q(t.burst, 50), q(t.burst, 100), t.errs, counts(t.curves), counts(t.versions))
	}
}

// counts is m as "name n, name n", by name.
func counts(m map[string]int) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(out, ", ")
}

// profileHandshakes takes a CPU profile of t's proxy (run with --pprof)
// while n sequential handshakes run against it, into file.
func (b *bench) profileHandshakes(t *hsTarget, n int, file string) {
	t.curves, t.versions = map[string]int{}, map[string]int{}
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() { // keeps handshaking until the profile is in; ends when stop closes
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t.count(handshakeGET(t.url, t.tls))
		}
	}()
	secs := max(2, n/200) // about twice n handshakes' worth at the sequential rate
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.admin[t.procs[0].Pid], secs))
	close(stop)
	<-done
	if err != nil {
		log.Printf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		log.Printf("profile: %v", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
	fmt.Printf("CPU profile of %s (pid %d) over %d s of sequential handshakes (%d done, %d errors): %s\n", t.name, t.procs[0].Pid, secs, t.done(), t.errs, file)
}
