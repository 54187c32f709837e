//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	"github.com/weftmesh/weft/internal/netns"
)

// mbTarget is one -appmesh path: requests to url sent from inside host,
// connections made to dial (url's address when empty).
type mbTarget struct {
	name  string
	host  *netns.Host
	url   string
	dial  string
	procs []*os.Process // whose CPU and memory the row shows: the proxies, client's first
	// counted are the sidecars' request counters (weft's paths only):
	// every request sent on the path must be counted by each.
	counted []counter
}

// counter is one stat of a sidecar's admin /stats, read from inside its
// namespace.
type counter struct {
	host *netns.Host
	name string
}

// read returns the counter's value, or -1 when it cannot be read.
func (c counter) read() int64 {
	code, body, err := nsGet(context.Background(), c.host, "", "http://"+mbAdmin+"/stats")
	if err != nil || code != http.StatusOK {
		return -1
	}
	return statValue(body, c.name)
}

// mbClient is an HTTP client whose up to conns keep-alive connections are
// opened inside h, to dial when it is set.
func mbClient(h *netns.Host, dial string, conns int) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			if dial != "" {
				addr = dial
			}
			return nsDial(ctx, h, addr)
		}}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// wait polls the path until it answers 200 or within has passed.
func (t mbTarget) wait(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		code, body, err := nsGet(ctx, t.host, t.dial, t.url)
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %q %v", code, strings.TrimSpace(body), err)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no 200 within %v; last: %s", within, last)
}

// wrk runs wrk at saturation from inside the target's host.
func (t mbTarget) wrk(d time.Duration, conns int) satResult {
	args := wrkArgs(t.url, d, conns)
	if t.dial != "" {
		// The address dialed, the name in the Host header, as the client
		// app resolving the service name would send.
		u := strings.Replace(t.url, hostOf(t.url), t.dial, 1)
		args = append([]string{"-H", "Host: " + hostOf(t.url)}, wrkArgs(u, d, conns)...)
	}
	out, err := t.host.Command(context.Background(), -1, append([]string{"wrk"}, args...)...).CombinedOutput()
	return parseWrk(out, err)
}

// hostOf is the host:port of an http:// URL.
func hostOf(url string) string {
	rest := strings.TrimPrefix(url, "http://")
	h, _, _ := strings.Cut(rest, "/")
	return h
}

// measureAppMesh runs the fixed-rate load interleaved over the targets,
// then wrk on each, and prints the tables.
func measureAppMesh(o appmeshOpts, targets []mbTarget) {
	for _, t := range targets {
		c := mbClient(t.host, t.dial, 8)
		sendScheduled(t.url, 500, 2*time.Second, 8, func(int) *http.Client { return c }, 1)
		c.CloseIdleConnections()
	}
	type acc struct {
		lat    []time.Duration
		errors int
		cpu    []time.Duration // per process
		wall   time.Duration
	}
	accs := make([]acc, len(targets))
	counted0 := make([][]int64, len(targets))
	clients := make([]*http.Client, len(targets))
	for i, t := range targets {
		accs[i].cpu = make([]time.Duration, len(t.procs))
		clients[i] = mbClient(t.host, t.dial, o.conns)
		for _, c := range t.counted {
			counted0[i] = append(counted0[i], c.read())
		}
	}
	load0 := loadavg.OneMinute()
	slice := o.dur / time.Duration(o.rounds)
	for range o.rounds {
		for i, t := range targets {
			cpu0 := make([]time.Duration, len(t.procs))
			for j, p := range t.procs {
				cpu0[j] = cpuTime([]*os.Process{p})
			}
			c := clients[i]
			lat, errs, wall := sendScheduled(t.url, o.rate, slice, o.conns, func(int) *http.Client { return c }, 1)
			for j, p := range t.procs {
				accs[i].cpu[j] += cpuTime([]*os.Process{p}) - cpu0[j]
			}
			accs[i].lat = append(accs[i].lat, lat...)
			accs[i].errors += errs
			accs[i].wall += wall
		}
	}
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	fixedLoad := loadavg.OneMinute()
	// Each request of the fixed-rate run crossed both sidecars, or the
	// interception did not do its job and the row measures something else.
	for i, t := range targets {
		for j, c := range t.counted {
			if got, want := c.read()-counted0[i][j], int64(len(accs[i].lat)); got != want {
				fmt.Printf("%s: %s counted %d requests of the fixed-rate run, not the %d sent\n", t.name, c.name, got, want)
			}
		}
	}
	fmt.Printf("\nFixed rate %d requests/s for %v per path, in %d interleaved slices of %v, %d connections opened in the client task's namespace (latency in ms from the scheduled send time). Load average %s before, %s after.\n",
		o.rate, o.dur, o.rounds, slice, o.conns, load0, fixedLoad)
	fmt.Printf("vCPU per 1,000 rps: all the path's proxies together, then each (client's sidecar / server's); on the direct row the app's. RSS per process.\n\n")
	fmt.Println("| path | achieved rps | p50 ms | p99 ms | max ms | errors | vCPU per 1,000 rps, together | each (client / server) | RSS MB (client / server) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var direct result
	type added struct {
		name     string
		p50, p99 float64
	}
	var adds []added
	for i, t := range targets {
		r := summarize(accs[i].lat, accs[i].errors, accs[i].wall)
		perK := func(cpu time.Duration) float64 { return cpu.Seconds() / accs[i].wall.Seconds() / (r.achieved / 1000) }
		var total time.Duration
		var each, rss []string
		for j, p := range t.procs {
			total += accs[i].cpu[j]
			each = append(each, fmt.Sprintf("%.3f", perK(accs[i].cpu[j])))
			rss = append(rss, fmt.Sprintf("%.1f", float64(memKB([]*os.Process{p}).rss)/1024))
		}
		fmt.Printf("| %s | %.0f | %.3f | %.3f | %.3f | %d | %.3f | %s | %s |\n", t.name, r.achieved, r.p50, r.p99, r.max, r.errors,
			perK(total), strings.Join(each, " / "), strings.Join(rss, " / "))
		if i == 0 {
			direct = r
		} else {
			adds = append(adds, added{t.name, r.p50 - direct.p50, r.p99 - direct.p99})
		}
	}
	fmt.Printf("\nAdded latency at %d requests/s (path minus app direct, same run, both hops):\n\n", o.rate)
	fmt.Println("| path | added p50 ms | added p99 ms |")
	fmt.Println("|---|---|---|")
	for _, a := range adds {
		fmt.Printf("| %s | %.3f | %.3f |\n", a.name, a.p50, a.p99)
	}
	fmt.Printf("\nSaturation: wrk -t2 -c%d -d%v --latency in the client task's namespace:\n\n", o.satConns, o.satDur)
	fmt.Println("| path | requests/s | p50 | p99 | load |")
	fmt.Println("|---|---|---|---|---|")
	for _, t := range targets {
		s := t.wrk(o.satDur, o.satConns)
		fmt.Printf("| %s | %s | %s | %s | %s |\n", t.name, s.rps, s.p50, s.p99, loadavg.OneMinute())
	}
}
