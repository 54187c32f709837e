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
