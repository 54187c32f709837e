package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	"github.com/weftmesh/weft/internal/procstat"
)

// measure makes the writes, one at a time, with the clients active
// connected, and prints what they cost: write -> last affected ACK, the
// API call, the server's CPU and memory. The server's CPU profile
// (-cpuprofile) covers the writes of the last call.
func measure(ctx context.Context, pid int, apiAddr string, w *world, events <-chan ackEvent, active []*client, connected time.Duration, nodes, services, writes int, every, settle bool) error {
	var err error
	// The profiles' forced collections come before the figures start
	// and after they end.
	signalProfile(ctx, pid, syscall.SIGUSR1, ".base")
	selfHeap(".proxies.base")
	m0 := scrape("http://" + apiAddr + "/metrics")
	cpu0 := procstat.CPU(pid)
	self0 := procstat.CPU(os.Getpid())
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	sysr0, sysw0 := procstat.Syscalls(pid)
	load0 := loadavg.String()
	var lat, apiLat []time.Duration
	byType := map[string][]time.Duration{} // lat by the type the write changes
	rnd := rand.New(rand.NewPCG(7, 11))
	affectedTotal := 0
	for i := range writes {
		k := i % services
		if every {
			k = 0
		}
		affected := map[int]bool{}
		for _, c := range active {
			if every || c.node%services == k || (c.node+1)%services == k {
				affected[c.id] = true
			}
		}
		affectedTotal += len(affected)
		typ := rdsType
		if i%2 == 1 && !every {
			typ = edsType
		}
		before := map[int]string{}
		for id := range affected {
			before[id] = active[id].version(typ)
		}
		if settle {
			if err := settleACKs(ctx, apiAddr, m0["weft_xds_acks_total"]+float64(affectedTotal-len(affected))); err != nil {
				return fmt.Errorf("write %d: %w", i, err)
			}
		}
		t0 := time.Now()
		if typ == rdsType {
			a := 1 + rnd.IntN(98)
			if a == w.weights[k] {
				// The same weights would change nothing, and no proxy
				// would have a new version to ACK.
				a = a%98 + 1
			}
			err = w.setWeights(ctx, k, a, 100-a)
		} else {
			err = w.toggleInstance(ctx, k)
		}
		if err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
		apiLat = append(apiLat, time.Since(t0))
		if len(affected) == 0 {
			continue
		}
		pending := len(affected)
		deadline := time.After(60 * time.Second)
		var last time.Time
		for pending > 0 {
			select {
			case e := <-events:
				if e.typ == typ && affected[e.client] && e.version != before[e.client] {
					affected[e.client] = false
					pending--
					last = e.at
				}
			case <-deadline:
				for id, waiting := range affected {
					if waiting {
						c := active[id]
						return fmt.Errorf("write %d: %d affected clients never ACKed a new %s; e.g. client-%d (stream %d) still has %s (before the write: %s)",
							i, pending, typ, c.node, id, c.version(typ), before[id])
					}
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		lat = append(lat, last.Sub(t0))
		if *each {
			log.Printf("write %d: %v, API %v", i, last.Sub(t0).Round(100*time.Microsecond), apiLat[len(apiLat)-1].Round(100*time.Microsecond))
		}
		byType[typ] = append(byType[typ], last.Sub(t0))
	}
	cpu1 := procstat.CPU(pid)
	self1 := procstat.CPU(os.Getpid())
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	sysr1, sysw1 := procstat.Syscalls(pid)
	m1 := scrape("http://" + apiAddr + "/metrics")
	signalProfile(ctx, pid, syscall.SIGUSR2, "")
	selfHeap(".proxies")
	log.Printf("machine load average (1, 5, 15 min) before the writes %s, after %s; the simulated proxies (this process) used %v of CPU per write",
		load0, loadavg.String(), time.Duration(float64(self1-self0)/float64(writes)).Round(100*time.Microsecond))
	rss, hwm := procstat.RSS(pid)
	mean := func(name string) time.Duration {
		n := m1[name+"_count"] - m0[name+"_count"]
		if n == 0 {
			return 0
		}
		return time.Duration((m1[name+"_sum"] - m0[name+"_sum"]) / n * float64(time.Second))
	}
	perWrite := func(name string) float64 { return (m1[name] - m0[name]) / float64(writes) }
	log.Printf("server side, means over the writes: recompute (commit seen -> snapshots handed to streams) %v per batch; write->ACK %v per proxy and type; per write: %.0f translations, %.0f endpoint-only updates, %.0f route-only updates, %.1f resources deep-validated, %.0f pushes (%.0f sent without waking the stream's goroutine: by the fan-out, or where a push window slot was freed)",
		mean("weft_xds_recompute_seconds").Round(10*time.Microsecond), mean("weft_xds_write_to_ack_seconds").Round(10*time.Microsecond),
		perWrite("weft_xds_translations_total"), perWrite("weft_xds_endpoint_updates_total"), perWrite("weft_xds_route_updates_total"),
		perWrite("weft_xds_resource_checks_total"), perWrite("weft_xds_pushes_total"), perWrite("weft_xds_inline_pushes_total"))
	log.Printf("heap allocated per write: server %.0f KB in %.0f collections over the writes; the simulated proxies %.0f KB in %d collections",
		perWrite("go_memstats_alloc_bytes_total")/1024, m1["go_gc_duration_seconds_count"]-m0["go_gc_duration_seconds_count"],
		float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(writes)/1024, ms1.NumGC-ms0.NumGC)
	slices.Sort(lat)
	slices.Sort(apiLat)
	log.Printf("API calls with %d proxies connected (HTTP, validation, fsync'd commit): p50 %s, p99 %s, max %s", len(active), ms(pct(apiLat, 50)), ms(pct(apiLat, 99)), ms(apiLat[len(apiLat)-1]))
	for _, typ := range []string{rdsType, edsType} {
		d := byType[typ]
		slices.Sort(d)
		if len(d) > 0 {
			log.Printf("writes changing %s: %d, p50 %s, p99 %s, max %s", typ[strings.LastIndexByte(typ, '.')+1:], len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(d[len(d)-1]))
		}
	}
	cpuPerWrite := time.Duration(float64(cpu1-cpu0) / float64(writes))
	affectedPerWrite := affectedTotal / writes
	if affectedPerWrite > 0 {
		log.Printf("server CPU per affected proxy per write: %v; API p99 %s", (cpuPerWrite / time.Duration(affectedPerWrite)).Round(time.Microsecond), ms(pct(apiLat, 99)))
		if affectedTotal > 0 && sysr1 >= sysr0 {
			log.Printf("server system calls per affected proxy per write (/proc/PID/io): %.2f read, %.2f write",
				float64(sysr1-sysr0)/float64(affectedTotal), float64(sysw1-sysw0)/float64(affectedTotal))
		}
	}
	row := func(d []time.Duration, p int) string {
		if len(d) == 0 {
			return "-"
		}
		return ms(pct(d, p))
	}
	fmt.Printf("| %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %d / %d |\n",
		len(active), nodes, writes, affectedPerWrite,
		row(lat, 50), row(lat, 99), row(lat, 100), ms(pct(apiLat, 50)), ms(pct(apiLat, 99)),
		ms(cpuPerWrite), connected.Round(time.Millisecond), rss>>20, hwm>>20)
	return nil
}

// scrape reads the sums and counts of a Prometheus text exposition,
// adding up the series of each name.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[name] += v
		}
	}
	return out
}

// settleACKs waits until the server's ACK count reaches want (-settle),
// at most 30 seconds. Outside the timed part of a write.
func settleACKs(ctx context.Context, apiAddr string, want float64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if scrape("http://" + apiAddr + "/metrics")["weft_xds_acks_total"] >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server counted fewer than %.0f ACKs after 30 s", want)
		}
		select {
		case <-time.After(2 * time.Millisecond): // setup only, not timed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func pct(d []time.Duration, p int) time.Duration { return d[(len(d)-1)*p/100] }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
