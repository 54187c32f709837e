package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

type result struct {
	achieved      float64
	p50, p99, max float64 // ms
	errors        int
}

// constantRate sends rate requests/s for d over conns keep-alive
// connections. Each request has a scheduled send time; its latency is
// measured from that time, so queueing behind a slow request counts
// (no coordinated omission).
func constantRate(url string, rate int, d time.Duration, conns int, tlsCfg *tls.Config) (lat []time.Duration, errs int, wall time.Duration) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true, TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return sendScheduled(url, rate, d, conns, func(int) *http.Client { return client }, 1)
}

// sendScheduled sends rate requests/s to url for d from workers senders,
// worker w through clientOf(w). Each request has a scheduled send time and
// its latency is measured from it, so queueing behind a slow request
// counts (no coordinated omission). An answer other than 200 over HTTP
// major version proto is an error. Request i is scheduled at the start +
// i/rate, and lat[i] is its latency (tail.go lines the slowest up with the
// proxies' GCs by that time).
func sendScheduled(url string, rate int, d time.Duration, workers int, clientOf func(w int) *http.Client, proto int) (lat []time.Duration, errs int, wall time.Duration) {
	return sendAt(url, time.Now(), time.Second/time.Duration(rate), int(d.Seconds()*float64(rate)), workers, clientOf, proto)
}

// sendAt sends n requests to url, request i at start + i*interval, as
// sendScheduled.
func sendAt(url string, start time.Time, interval time.Duration, n, workers int, clientOf func(w int) *http.Client, proto int) (lat []time.Duration, errs int, wall time.Duration) {
	idx := make(chan int, n)
	lat = make([]time.Duration, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		c := clientOf(w)
		wg.Add(1)
		go func() { // one sender's share of the requests; ends when idx closes
			defer wg.Done()
			for i := range idx {
				at := start.Add(time.Duration(i) * interval)
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait)
				}
				resp, err := c.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.ProtoMajor != proto {
						err = fmt.Errorf("%s %d", resp.Proto, resp.StatusCode)
					}
				}
				lat[i] = time.Since(at)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return lat, errs, time.Since(start)
}

// summarize gives the rate and latency percentiles of pooled samples
// taken over wall time.
func summarize(lat []time.Duration, errs int, wall time.Duration) result {
	n := len(lat)
	if n == 0 {
		return result{}
	}
	slices.Sort(lat)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return result{achieved: float64(n) / wall.Seconds(), p50: ms(lat[n/2]), p99: ms(lat[n*99/100]), max: ms(lat[n-1]), errors: errs}
}

func warm(url string, tlsCfg *tls.Config) {
	constantRate(url, 500, 2*time.Second, 8, tlsCfg)
}

// pathRun is what one path's fixed-rate slices add up to.
type pathRun struct {
	lat    []time.Duration
	errors int
	cpu    time.Duration
	wall   time.Duration
	gcs    int64 // with -profile or -gc-times: the weft proxies' GC cycles during the slices
	slices []runSlice
	sched  schedStat // the path's proxies' threads (tail.go)
	gen    schedStat // the generator's (this process)
	app    schedStat // the app's
	mem    memory
	memRow string // with -mem: the -mem table's row
}

// fixedRun is the fixed-rate run: each path's slices, and the machine's
// state over them.
type fixedRun struct {
	paths []pathRun // by run's order
	load  string    // the load average after the run
	steal string    // the steal time during it, and the generator's GC cycles
}

// fixedRate runs the fixed-rate load through the paths of run. The load
// is interleaved: each path gets -rounds slices of -duration/-rounds, in
// turn, and its latencies are pooled over its slices. Every path thus
// samples the same stretch of the machine's noise, which a p99
// difference of a fraction of a millisecond needs on a 2-core machine
// shared with the load generator and the app. The paths' order is drawn
// anew every round (roundOrder) unless -fixed-order. With -profile, the
// -profile-path path's first proxy is profiled during its first slice.
func (b *bench) fixedRate(run []target, o opts) fixedRun {
	accs := make([]pathRun, len(run))
	slice := o.slice()
	var profDone chan struct{}
	steal0, fixedStart, gcs0 := stealTicks(), time.Now(), ownNumGC()
	for round := 0; round < o.rounds; round++ {
		for _, i := range roundOrder(len(run), o.fixedOrder) {
			t := run[i]
			if o.profile != "" && t.name == o.profPath && profDone == nil {
				profDone = make(chan struct{})
				go func() { // fetches the profile; ends with the HTTP call
					defer close(profDone)
					resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.admin[t.procs[0].Pid], max(1, int(slice.Seconds())-1)))
					if err != nil {
						log.Printf("profile: %v", err)
						return
					}
					defer resp.Body.Close()
					f, _ := os.Create(o.profile)
					_, _ = io.Copy(f, resp.Body)
					f.Close()
				}()
			}
			gc0 := b.numGC(t.procs, b.pprof)
			cpu0 := cpuTime(t.procs)
			sch0, gen0, app0 := schedOf(pidsOf(t.procs)), schedOf([]int{os.Getpid()}), schedOf([]int{b.appPid})
			var lat []time.Duration
			var errs int
			var wall time.Duration
			// The generator's schedule starts within microseconds of t0
			// (sendScheduled makes its clients first).
			t0 := time.Now()
			if isH2C(t.name) {
				var dialed int64
				lat, errs, wall, dialed = constantRateH2C(t.url, o.rate, slice, o.conns, o.h2cConns, t.tls)
				if dialed != int64(o.h2cConns) {
					fmt.Printf("%s: the generator opened %d connections, not %d\n", t.name, dialed, o.h2cConns)
				}
			} else {
				lat, errs, wall = constantRate(t.url, o.rate, slice, o.conns, t.tls)
			}
			accs[i].cpu += cpuTime(t.procs) - cpu0
			if t.name != "app direct" && t.name != "app direct"+h2cSuffix {
				accs[i].sched = accs[i].sched.add(schedOf(pidsOf(t.procs)).sub(sch0))
			}
			accs[i].gen = accs[i].gen.add(schedOf([]int{os.Getpid()}).sub(gen0))
			accs[i].app = accs[i].app.add(schedOf([]int{b.appPid}).sub(app0))
			if round == o.rounds-1 {
				// Memory as the path's last slice leaves it, before any
				// other request to the proxy (other paths' slices leave it
				// idle, and its pages are released after a while).
				accs[i].mem = memKB(t.procs)
				if o.mem && !strings.HasPrefix(t.name, "app direct") {
					accs[i].memRow = memRow(t.name, t.procs, accs[i].mem, b.admin)
				}
			}
			accs[i].gcs += b.numGC(t.procs, b.pprof) - gc0
			accs[i].lat = append(accs[i].lat, lat...)
			accs[i].slices = append(accs[i].slices, runSlice{t0, time.Second / time.Duration(o.rate), lat})
			accs[i].errors += errs
			accs[i].wall += wall
			if profDone != nil {
				<-profDone
			}
		}
	}
	fixedLoad := loadavg.OneMinute()
	fixedSteal := fmt.Sprintf("%.1f ms per second; the generator's GC cycles: %d", float64(stealTicks()-steal0)*10/time.Since(fixedStart).Seconds(), ownNumGC()-gcs0)
	return fixedRun{accs, fixedLoad, fixedSteal}
}

// roundOrder is the order of a round's n slices: the paths' own order
// with fixed, else drawn anew. With one order every round, a path's
// slice always follows the same path's and inherits what that one leaves
// (the shared app's garbage, connections closing); drawn anew, no path
// has the same neighbour every round. (Round 37 drew them to see whether
// the order put h2c's p99 above haproxy's: it did not; docs/bench/proxy.md.)
func roundOrder(n int, fixed bool) []int {
	if fixed {
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		return order
	}
	return rand.Perm(n)
}
