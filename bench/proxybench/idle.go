package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// idleTarget is a path of the idle connections' run.
type idleTarget struct {
	name  string
	url   string
	proc  *os.Process
	admin string      // weft proxy's admin address (with --pprof): its Go stack and heap
	tls   *tls.Config // mutual TLS into the proxy
	h2c   bool        // HTTP/2 without TLS (idleh2c.go)
}

// idleRun measures what idle keep-alive connections (-idle-conns) cost
// each one-proxy path's proxy, on proxies started for it, and prints the
// table.
func (b *bench) idleRun(xds *xdsServer, k *pki, app string, o opts) {
	// Fresh processes, started now: the ones the other runs measured
	// keep the heap and stacks the saturation runs grew, in which idle
	// connections would fit without a trace.
	var its []idleTarget
	addWeft := func(name, bin, node string, mtls bool, extra ...string) {
		p := freePort()
		rs := resources("ingress", p, "cds_ingress_bench_server_http_9080", app, true)
		u := fmt.Sprintf("http://127.0.0.1:%d/", p)
		var tc *tls.Config
		if mtls {
			rs = k.withMTLS(rs, true, false)
			u, tc = fmt.Sprintf("https://127.0.0.1:%d/", p), k.clientTLS()
		}
		xds.set(node, rs)
		proc := b.startProxy(bin, node, xds.addr, append([]string{"--pprof"}, extra...)...)
		waitHTTP(u, tc)
		its = append(its, idleTarget{name, u, proc, b.admin[proc.Pid], tc, false})
	}
	addWeft("one weft proxy", b.weft, "mesh/bench/virtualNode/server-idle", false, o.aArgs...)
	if o.weftB != "" {
		addWeft("one weft proxy B", o.weftB, "mesh/bench/virtualNode/server-idle-b", false, o.bArgs...)
	}
	addWeft("one weft proxy, mTLS in", b.weft, "mesh/bench/virtualNode/server-idle-tls", true, o.aArgs...)
	if o.weftB != "" {
		addWeft("one weft proxy B, mTLS in", o.weftB, "mesh/bench/virtualNode/server-idle-tls-b", true, o.bArgs...)
	}
	pHI := freePort()
	procHI := b.startHAProxy(pHI, app)
	its = append(its, idleTarget{"haproxy", fmt.Sprintf("http://127.0.0.1:%d/", pHI), procHI, "", nil, false})
	pHIT := freePort()
	b.startHAProxyTLS(k, pHIT, app, true, false)
	procHIT := b.procs[len(b.procs)-1].Process
	its = append(its, idleTarget{"haproxy, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pHIT), procHIT, "", k.clientTLS(), false})
	if h2cWanted(o.h2c, o.only) {
		// The h2c listener of an http2 virtual node, its cluster
		// speaking HTTP/2 to the app, as on the h2c paths.
		addH2C := func(name, bin, node string, extra ...string) {
			p := freePort()
			xds.set(node, h2cResources("ingress", p, "cds_ingress_bench_server_http2_9080", app, true))
			proc := b.startProxy(bin, node, xds.addr, append([]string{"--pprof"}, extra...)...)
			u := fmt.Sprintf("http://127.0.0.1:%d/", p)
			waitH2(u, nil)
			its = append(its, idleTarget{name, u, proc, b.admin[proc.Pid], nil, true})
		}
		addH2C("one weft proxy"+h2cSuffix, b.weft, "mesh/bench/virtualNode/server-idle-h2c", o.aArgs...)
		if o.weftB != "" {
			addH2C("one weft proxy B"+h2cSuffix, o.weftB, "mesh/bench/virtualNode/server-idle-h2c-b", o.bArgs...)
		}
		pHI2 := freePort()
		up := " proto h2"
		if h2cUpstreamH1 {
			up = ""
		}
		procHI2 := b.haproxy(pHI2, fmt.Sprintf("127.0.0.1:%d proto h2", pHI2), app+up)
		waitH2(fmt.Sprintf("http://127.0.0.1:%d/", pHI2), nil)
		its = append(its, idleTarget{"haproxy" + h2cSuffix, fmt.Sprintf("http://127.0.0.1:%d/", pHI2), procHI2, "", nil, true})
	}
	if o.evloop != "" {
		pEI := freePort()
		procEI := b.startEvloop(o.evloop, o.evloopLoops, pEI, app)
		its = append(its, idleTarget{"evloop prototype", fmt.Sprintf("http://127.0.0.1:%d/", pEI), procEI, "", nil, false})
	}
	pRI := freePort()
	procRI := b.startRelay(pRI, app)
	its = append(its, idleTarget{"Go TCP relay", fmt.Sprintf("http://127.0.0.1:%d/", pRI), procRI, "", nil, false})
	// weft proxy releases its start-up pages 5 s after its
	// configuration settles (internal/proxy's pagesSettle): measured
	// before that, the release would hide the connections' cost.
	time.Sleep(8 * time.Second)
	fmt.Printf("\nIdle keep-alive connections: a freshly started proxy per path (one GET to warm it), then %d connections, one GET each, idle for %v; the proxy's memory before and with them open, each once its RSS held steady for a second:\n\n", o.idleN, o.idleSettle)
	// The anonymous column is the one a release of weft proxy's
	// executable pages (every minute, internal/proxy's pagesRefresh)
	// cannot move: a release between the two readings makes the RSS
	// column negative.
	fmt.Println("| path | connections | RSS before MB | RSS with them MB | KB per connection (RSS) | anonymous KB per connection | private KB per connection | Go stack / heap in use, KB per connection |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, t := range its {
		if !selected(t.name, o.only, o.skip) {
			continue
		}
		if t.h2c {
			waitH2(t.url, nil)
		} else {
			waitHTTP(t.url, t.tls)
		}
		var goBefore, goAfter goMem
		if t.admin != "" {
			goBefore = goMemOf(t.admin)
		}
		r, err := idleConns(t.url, t.tls, t.h2c, []*os.Process{t.proc}, o.idleN, o.idleSettle, func() {
			if t.admin != "" {
				goAfter = goMemOf(t.admin)
				if o.idleProf != "" {
					fetch("http://"+t.admin+"/debug/pprof/heap", fmt.Sprintf("%s-%d.pb.gz", o.idleProf, t.proc.Pid))
				}
			}
		})
		if err != nil {
			fmt.Printf("| %s | %d | error: %v | | | | | |\n", t.name, r.n, err)
			continue
		}
		goCol := "n/a"
		if t.admin != "" {
			goCol = fmt.Sprintf("%.1f / %.1f", float64(goAfter.stack-goBefore.stack)/1024/float64(r.n), float64(goAfter.heap-goBefore.heap)/1024/float64(r.n))
		}
		fmt.Printf("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n", t.name, r.n, float64(r.before.rss)/1024, float64(r.after.rss)/1024,
			float64(r.after.rss-r.before.rss)/float64(r.n), float64(r.after.anon-r.before.anon)/float64(r.n), float64(r.after.private-r.before.private)/float64(r.n), goCol)
	}
}

// idleResult is what n idle keep-alive connections cost a proxy.
type idleResult struct {
	before, after memory // the proxy's memory before opening them and with them open
	n             int    // connections that completed their request and stayed open
}

// idleConns opens n keep-alive connections to target, sends one GET on
// each and reads its response (over mutual TLS when tc is set; over h2c,
// one stream, when h2c is set: idleh2c.go), and
// measures the proxy's memory with all of them open and idle. settle is
// how long the connections stay idle (the proxy's goroutines park,
// nothing else runs) before the second measurement. open runs after that
// measurement, while the connections are still open. The connections are
// closed before it returns.
func idleConns(target string, tc *tls.Config, h2c bool, procs []*os.Process, n int, settle time.Duration, open func()) (idleResult, error) {
	u, err := url.Parse(target)
	if err != nil {
		return idleResult{}, err
	}
	res := idleResult{before: steadyMem(procs)}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host)
	for i := 0; i < n; i++ {
		var c net.Conn
		d := &net.Dialer{Timeout: 5 * time.Second}
		if tc != nil {
			c, err = tls.DialWithDialer(d, "tcp", u.Host, tc)
		} else {
			c, err = d.Dial("tcp", u.Host)
		}
		if err != nil {
			return res, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if h2c {
			if err := h2cGet(c, u); err != nil {
				return res, fmt.Errorf("connection %d: %w", i, err)
			}
			_ = c.SetDeadline(time.Time{})
			res.n++
			continue
		}
		if _, err := c.Write([]byte(req)); err != nil {
			return res, fmt.Errorf("connection %d: %w", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return res, fmt.Errorf("connection %d: %w", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.Close {
			return res, fmt.Errorf("connection %d: the proxy closed a keep-alive connection", i)
		}
		_ = c.SetDeadline(time.Time{})
		res.n++
	}
	time.Sleep(settle) // a measurement's settling time, not a wait for an event
	res.after = steadyMem(procs)
	open()
	return res, nil
}

// steadyMem waits (up to 20 s) until the processes' RSS stops moving
// by more than 64 KB a second, then returns their memory: a freshly
// started weft proxy releases its start-up pages a few seconds after
// its configuration settles.
func steadyMem(procs []*os.Process) memory {
	m := memKB(procs)
	for i := 0; i < 20; i++ {
		time.Sleep(time.Second) // sampling interval of the measurement
		n := memKB(procs)
		d := n.rss - m.rss
		m = n
		if d < 64 && d > -64 {
			break
		}
	}
	return m
}

// goMem is a Go process's stack and heap in use, in bytes.
type goMem struct{ stack, heap int64 }

// numGC is the GC cycles the weft proxies among procs ran so far, from
// their heap profiles (on only with -profile, which runs them with
// --pprof).
func (b *bench) numGC(procs []*os.Process, on bool) int64 {
	if !on {
		return 0
	}
	var n int64
	for _, p := range procs {
		admin, ok := b.admin[p.Pid]
		if !ok {
			continue
		}
		resp, err := http.Get("http://" + admin + "/debug/pprof/heap?debug=1")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "# NumGC = "); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
		resp.Body.Close()
	}
	return n
}

// goMemOf reads them from a weft proxy's /debug/pprof/heap?debug=1
// (admin listener with --pprof), whose tail prints the runtime's
// MemStats: "# Stack = inuse / sys" and "# HeapInuse = n".
func goMemOf(admin string) goMem {
	var m goMem
	resp, err := http.Get("http://" + admin + "/debug/pprof/heap?debug=1")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			in, _, _ := strings.Cut(v, " ")
			m.stack, _ = strconv.ParseInt(in, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			m.heap, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return m
}

// fetch saves what url answers to file.
func fetch(url, file string) {
	resp, err := http.Get(url)
	if err != nil {
		log.Printf("%s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		log.Print(err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// memRow is a row of the -mem table: a path's memory per proxy, in MB.
// The Go columns come from weft proxy's admin /memory (Envoy's shape, from
// runtime/metrics): unlike a heap profile it needs no --pprof and
// symbolises nothing, so reading it does not touch the executable's
// function tables, which would then stay resident and count in the next
// reading.
func memRow(name string, procs []*os.Process, m memory, admin map[int]string) string {
	n := float64(len(procs))
	mb := func(kb int64) float64 { return float64(kb) / 1024 / n }
	var objects, free, rest float64
	goCols := true
	for _, p := range procs {
		a := admin[p.Pid]
		if a == "" {
			goCols = false
			break
		}
		g, ok := envoyMemory(a)
		if !ok {
			goCols = false
			break
		}
		objects += float64(g.allocated)
		free += float64(g.free)
		rest += float64(g.physical) - float64(g.allocated) - float64(g.free)
	}
	gb := func(b float64) float64 { return b / (1 << 20) / n }
	row := fmt.Sprintf("| %s | %.1f | %.1f | %.1f | %.1f |", name, mb(m.rss), mb(m.anon), mb(m.rss-m.anon), mb(m.private))
	if !goCols {
		return row + " n/a | n/a | n/a |"
	}
	return row + fmt.Sprintf(" %.1f | %.1f | %.1f |", gb(objects), gb(free), gb(rest))
}

// envMem is the part of Envoy's /memory answer memRow uses, in bytes.
type envMem struct{ allocated, free, physical uint64 }

// envoyMemory reads admin's /memory; ok is false when the proxy has none.
func envoyMemory(admin string) (envMem, bool) {
	resp, err := http.Get("http://" + admin + "/memory")
	if err != nil {
		return envMem{}, false
	}
	defer resp.Body.Close()
	var raw struct {
		Allocated          string `json:"allocated"`
		PageheapFree       string `json:"pageheap_free"`
		TotalPhysicalBytes string `json:"total_physical_bytes"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&raw) != nil {
		return envMem{}, false
	}
	var m envMem
	var errs [3]error
	m.allocated, errs[0] = strconv.ParseUint(raw.Allocated, 10, 64)
	m.free, errs[1] = strconv.ParseUint(raw.PageheapFree, 10, 64)
	m.physical, errs[2] = strconv.ParseUint(raw.TotalPhysicalBytes, 10, 64)
	return m, errors.Join(errs[:]...) == nil
}
