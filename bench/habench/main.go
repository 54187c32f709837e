// Command habench measures a highly available weft control plane: weft
// server replicas (real processes) on a three-member etcd cluster (Debian's
// etcd on loopback) next to one replica on bbolt, with simulated proxies
// (weft proxy's own xDS client, one ADS stream each) spread round-robin
// over the replicas (each proxy is given every replica's address and
// picks one at random, as weft proxy does). For each setup it reports
//   - write -> every proxy applied (and ACKed) the new route: p50/p99 over
//     the writes, each write through the next replica;
//   - memory per connected proxy per replica: RSS and Go heap at 0 and at
//     all proxies connected;
//   - failover (several replicas): SIGKILL the first replica, time until
//     each of its proxies has a stream on another and has been configured
//     there: p50/p99/max;
//   - where a write's time goes: the API call, the first and last proxy
//     applied on each replica, the replicas' own histograms (etcd commit,
//     learning of the write from the commit or the watch, xDS recompute,
//     route ACKs) and the CPU each process (replicas, etcd members, this
//     benchmark) used during the writes;
//   - the writes a GC cycle of a replica landed in (from its
//     GODEBUG=gctrace=1 lines), and of habench itself, whose heap (1,000
//     simulated proxies' worth) is collected between writes, outside the
//     timed windows, unless -gc-between=false: real proxies run on other
//     machines and do not share the replicas' cores or GC.
//
// Setup bbolt:N with N > 1 runs N replicas on N separate bbolt stores,
// each write made on all of them at once: three replicas' recompute and
// pushes without etcd, to split etcd's cost from the replicas'.
//
// With two setups (the default bbolt:1,etcd:3), both run at once by
// default (-paired), each with its own replicas, store and proxies, and
// their writes alternate in pairs, so that the two halves of a pair see
// the same load on the machine's shared cores; the report ends with the
// comparison pair by pair: each setup's p50/p99/max, the per-pair
// difference's median and p90, the difference of the p50s and of the
// p99s with 95 % bootstrap intervals, and whether the second setup's p99
// is within -goal of the first's. -paired=false runs the setups one after
// the other, as before 2026-12-04. -pairs-out keeps a run's pairs and
// -pool compares the pairs of several runs.
//
// Build weft first (go build -o /tmp/weft ./cmd/weft), then
//
//	go run ./bench/habench -weft /tmp/weft -proxies 1000 -writes 200
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	"github.com/weftmesh/weft/internal/store/etcdtest"
	"github.com/weftmesh/weft/internal/weftbin"
)

const (
	account = "111122223333"
	mesh    = "ha"
)

func main() {
	weft := flag.String("weft", "", "weft binary to run as the replicas (go build -o /tmp/weft ./cmd/weft)")
	proxies := flag.Int("proxies", 1000, "simulated proxies (ADS streams), spread round-robin over the replicas")
	nodes := flag.Int("nodes", 100, "virtual nodes the proxies are instances of")
	writes := flag.Int("writes", 50, "route weight writes, one at a time, each through the next replica")
	setups := flag.String("setups", "bbolt:1,etcd:3", "setups run in turn: store:replicas, store bbolt or etcd (bbolt:N: N separate stores, each write made on all)")
	etcdFlags := flag.String("etcd-flags", "", "more flags for every etcd member, space-separated (e.g. --backend-batch-interval 1s; etcd 3.4 has no --unsafe-no-fsync)")
	gogc := flag.String("replica-gogc", "", "GOGC of the weft replicas (default: Go's, 100)")
	procs := flag.Int("replica-gomaxprocs", 0, "GOMAXPROCS of the weft replicas (default: Go's, every core)")
	etcdProfile := flag.String("etcd-cpu-profile", "", "directory: write a CPU profile of each etcd member, taken during the writes (runs etcd with --enable-pprof)")
	replicaProfile := flag.String("replica-cpu-profile", "", "directory: sample each weft replica's CPU with Linux perf during the writes (perf.data files, one per replica)")
	members := flag.Int("members", 3, "etcd members")
	etcdProcs := flag.Int("etcd-gomaxprocs", 0, "GOMAXPROCS of the etcd members (default: Go's, every core)")
	failover := flag.Bool("failover", true, "SIGKILL the first replica at the end (setups with several replicas)")
	protocol := flag.String("protocol", "delta", "the proxies' xDS: delta (weft proxy's default) or sotw")
	tuneOnly := flag.String("tune-only", "", "apply -replica-gogc and -replica-gomaxprocs only to the setups of this store (bbolt or etcd; default: all), to compare a tuned setup with an untuned one in the same run")
	gcBetween := flag.Bool("gc-between", true, "collect habench's own heap (runtime.GC) after each write (-paired: after each pair), outside the timed window, so that the simulated proxies' GC does not land inside a write (real proxies run elsewhere, not on the replicas' cores); -gc-between=false: the shape of round 10 and before")
	replicaGC := flag.Bool("replica-gc", true, "run the replicas with GODEBUG=gctrace=1 and count the writes each replica's GC cycles landed in")
	tail := flag.Int("tail", 5, "with -timeline, print the time line of this many slowest writes, one by one, next to the median write's")
	timeline := flag.Bool("timeline", false, "scrape every replica's /metrics after each write and print each replica's steps on the writes' time line (the scrapes add replica CPU between writes)")
	idle := flag.Duration("idle", 5*time.Second, "before the writes, measure the etcd members' CPU and requests this long with every proxy connected and nothing written (0: skip)")
	paired := flag.Bool("paired", true, "with two setups: start both, then make their writes in pairs (A B, then B A, ...), each timed until its own setup's proxies applied it, and compare them pair by pair with a bootstrap interval; -paired=false: the setups one after the other, the shape before 2026-12-04 round 12")
	goal := flag.Duration("goal", 20*time.Millisecond, "with -paired or -pool: the second setup's p99 should be within this of the first's")
	pairsOut := flag.String("pairs-out", "", "with -paired: write each pair's two times (ms) to this file, for -pool")
	poolFiles := flag.String("pool", "", "comma-separated files written by -pairs-out: print the paired comparison over all their pairs and run nothing")
	flag.Parse()
	if *poolFiles != "" {
		if err := pool(strings.Split(*poolFiles, ","), *goal); err != nil {
			fmt.Fprintf(os.Stderr, "habench: -pool: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *weft == "" || *proxies < 1 || *nodes < 1 || *writes < 1 || *writes > maxWrite-2 || (*protocol != "delta" && *protocol != "sotw") {
		fmt.Fprintf(os.Stderr, "habench: -weft is required; -proxies, -nodes and -writes must be positive, -writes at most %d; -protocol delta or sotw\n", maxWrite-2)
		os.Exit(2)
	}
	var benches []*bench
	for _, s := range strings.Split(*setups, ",") {
		kind, n, _ := strings.Cut(s, ":")
		replicas, err := strconv.Atoi(n)
		if err != nil || replicas < 1 || (kind != "bbolt" && kind != "etcd") {
			fmt.Fprintf(os.Stderr, "habench: bad setup %q (want bbolt:N or etcd:N)\n", s)
			os.Exit(2)
		}
		b := &bench{name: s, weft: *weft, kind: kind, replicas: replicas, members: *members, proxies: *proxies, nodes: *nodes, writes: *writes,
			failover: *failover && kind == "etcd", protocol: *protocol, etcdFlags: strings.Fields(*etcdFlags), gogc: *gogc, gomaxprocs: *procs, etcdProfile: *etcdProfile, replicaProfile: *replicaProfile, idle: *idle, timeline: *timeline, tail: *tail, tuneOnly: *tuneOnly, etcdProcs: *etcdProcs, gcBetween: *gcBetween, replicaGC: *replicaGC}
		if *etcdProfile != "" {
			b.etcdFlags = append(b.etcdFlags, "--enable-pprof")
		}
		benches = append(benches, b)
	}
	if *paired && len(benches) > 2 {
		fmt.Fprintln(os.Stderr, "habench: -paired compares two setups; -paired=false runs more in turn")
		os.Exit(2)
	}
	pairedRun := *paired && len(benches) == 2
	if *pairsOut != "" && !pairedRun {
		fmt.Fprintln(os.Stderr, "habench: -pairs-out needs a paired run: -paired and two setups")
		os.Exit(2)
	}
	for _, b := range benches {
		b.paired = pairedRun
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	shape := "habench's own GC kept out of the timed windows (-gc-between; real proxies do not share the replicas' cores or GC)"
	if !*gcBetween {
		shape = "habench's own GC may land inside the timed windows (-gc-between=false, the shape before 2026-12-03 round 11)"
	}
	order := "the setups in turn (-paired=false)"
	if pairedRun {
		order = "both setups up at once, their writes in pairs (-paired)"
	}
	fmt.Printf("habench: %d proxies per setup (%s xDS) over %d virtual nodes, %d writes per setup, %s, %s; load average before %s\n",
		*proxies, *protocol, *nodes, *writes, order, shape, loadavg.String())
	if pairedRun {
		if err := runPaired(ctx, [2]*bench{benches[0], benches[1]}, *goal, *pairsOut); err != nil {
			fmt.Fprintf(os.Stderr, "habench: %v\n", err)
			os.Exit(1)
		}
	} else {
		for _, b := range benches {
			if err := b.run(ctx); err != nil {
				fmt.Fprintf(os.Stderr, "habench: %s: %v\n", b.name, err)
				os.Exit(1)
			}
		}
	}
	fmt.Printf("load average after %s\n", loadavg.String())
}

type bench struct {
	name                   string // the setup as given: store:replicas
	weft                   string
	kind                   string
	replicas, members      int
	proxies, nodes, writes int
	failover               bool
	protocol               string
	etcdFlags              []string
	gogc                   string
	gomaxprocs             int
	etcdProcs              int
	etcdProfile            string
	replicaProfile         string
	timeline               bool
	gcBetween              bool
	replicaGC              bool
	tail                   int
	tuneOnly               string
	idle                   time.Duration
	// paired: this setup's writes alternate with another's (-paired).
	paired bool
	// idleCPU is the etcd members' CPU per second of the idle window,
	// all members together (0: not measured).
	idleCPU                       float64
	cluster                       *etcdtest.Cluster
	procs                         []*replica
	sims                          []*sim
	track                         tracker
	simWG                         sync.WaitGroup
	baseRSS, baseHeap             []float64
	proxyRSS, proxyHeap, perProxy []float64
	// gcs are the replicas' GC cycles, by replica (-replica-gc).
	gcs []*gcTrace
	// etcdClient reads, after each write, when the writer sent its
	// commit (-timeline on etcd).
	etcdClient *clientv3.Client
	// closers undo start, in reverse order (close).
	closers []func()
}

// run measures one setup on its own: start, writes, failover.
func (b *bench) run(ctx context.Context) error {
	defer b.close()
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := b.measureIdle(ctx); err != nil {
		return err
	}
	if err := b.measureWrites(ctx); err != nil {
		return err
	}
	if b.failover && b.replicas > 1 {
		return b.measureFailover(ctx)
	}
	return nil
}

// onClose adds f to what close undoes, in reverse order.
func (b *bench) onClose(f func()) { b.closers = append(b.closers, f) }

// close stops what start started, the last started first: the proxies,
// the replicas, the etcd members, then the setup's directory goes.
func (b *bench) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// start starts the setup: its store (etcd members or bbolt directories),
// its replicas, the mesh, then its proxies; it returns once every proxy
// is configured, having printed the replicas' memory per proxy. What it
// started is stopped by close, also when it fails.
func (b *bench) start(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "habench-")
	if err != nil {
		return err
	}
	b.onClose(func() { os.RemoveAll(dir) })
	var storeArgs []string
	if b.kind == "etcd" {
		var env []string
		if b.etcdProcs > 0 {
			env = []string{fmt.Sprintf("GOMAXPROCS=%d", b.etcdProcs)}
		}
		var cl *etcdtest.Cluster
		err := withEnv(env, func() (err error) {
			cl, err = etcdtest.Launch(dir, b.members, b.etcdFlags...)
			return err
		})
		if err != nil {
			return err
		}
		b.onClose(cl.Stop)
		b.cluster = cl
		if b.timeline {
			c, err := clientv3.New(clientv3.Config{Endpoints: cl.Endpoints(), DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				return err
			}
			b.onClose(func() { c.Close() })
			b.etcdClient = c
		}
		var hosts []string
		for _, e := range cl.Endpoints() {
			hosts = append(hosts, strings.TrimPrefix(e, "http://"))
		}
		storeArgs = []string{"--store", "etcd://" + strings.Join(hosts, ",")}
	}
	for i := range b.replicas {
		args := storeArgs
		if b.kind == "bbolt" {
			args = []string{"--data-dir", filepath.Join(dir, fmt.Sprintf("data%d", i))}
		}
		env := b.env()
		var onLine func(time.Time, string)
		if b.replicaGC {
			g := &gcTrace{}
			b.gcs = append(b.gcs, g)
			env, onLine = append(env, "GODEBUG=gctrace=1"), g.line
		}
		r, err := startReplica(ctx, b.weft, fmt.Sprintf("r%d", i), env, onLine, args)
		if err != nil {
			return err
		}
		b.onClose(r.Kill)
		b.procs = append(b.procs, r)
	}
	for _, r := range b.writers(0) {
		if err := setUpMesh(ctx, client(r), b.nodes); err != nil {
			return err
		}
	}
	fmt.Printf("\n== %s, %d replica(s)", b.kind, b.replicas)
	if b.kind == "etcd" {
		fmt.Printf(" on %d members", b.members)
		if b.etcdProcs > 0 {
			fmt.Printf(" with GOMAXPROCS=%d", b.etcdProcs)
		}
		if len(b.etcdFlags) > 0 {
			fmt.Printf(" with %s", strings.Join(b.etcdFlags, " "))
		}
	} else if b.replicas > 1 {
		fmt.Printf(" on separate stores, each write made on all")
	}
	if env := b.env(); len(env) > 0 {
		fmt.Printf(", replicas with %s", strings.Join(env, " "))
	}
	fmt.Printf(" (load average %s)\n", loadavg.String())
	for _, r := range b.procs {
		rss, heap := r.memory()
		b.baseRSS, b.baseHeap = append(b.baseRSS, rss), append(b.baseHeap, heap)
	}

	// The proxies, each knowing every replica.
	simCtx, cancel := context.WithCancel(ctx)
	b.onClose(func() {
		cancel()
		b.simWG.Wait()
	})
	var addrs []string
	for _, r := range b.procs {
		addrs = append(addrs, r.XDS)
	}
	b.track.arm(1, b.proxies)
	start := time.Now()
	for i := range b.proxies {
		s := newSim(fmt.Sprintf("front-%03d", i%b.nodes), addrs, b.protocol, &b.track)
		b.sims = append(b.sims, s)
		b.simWG.Go(func() { s.c.Run(simCtx) }) // ends when simCtx is cancelled, at the end of the setup
	}
	if missing := b.track.wait(ctx, 120*time.Second); missing > 0 {
		return fmt.Errorf("%d of %d proxies not configured within 120 s", missing, b.proxies)
	}
	fmt.Printf("%d proxies configured %v after the first connected\n", b.proxies, time.Since(start).Round(time.Millisecond))
	b.memory()
	return nil
}

// memory prints each replica's RSS and Go heap (in use) per connected
// proxy: the difference from before any proxy connected, divided by the
// proxies the replica serves.
func (b *bench) memory() {
	for i, r := range b.procs {
		n, err := r.streams()
		if err != nil || n == 0 {
			fmt.Printf("replica %s: no proxies counted (%v)\n", r.Name, err)
			continue
		}
		rss, heap := r.memory()
		fmt.Printf("replica %s: %d proxies; RSS %.1f -> %.1f MiB (%.1f KiB per proxy); Go heap in use %.1f -> %.1f MiB (%.1f KiB per proxy)\n",
			r.Name, n, b.baseRSS[i]/(1<<20), rss/(1<<20), (rss-b.baseRSS[i])/float64(n)/1024,
			b.baseHeap[i]/(1<<20), heap/(1<<20), (heap-b.baseHeap[i])/float64(n)/1024)
	}
}

// writers are the replicas write k is made through: the next one on a
// shared store, all of them on separate ones.
func (b *bench) writers(k int) []*replica {
	if b.kind == "bbolt" {
		return b.procs
	}
	return []*replica{b.procs[k%len(b.procs)]}
}

// replica is one running `weft server`.
type replica struct{ *weftbin.Server }

// adminTimeout bounds each request to a replica's /v1/proxies and
// /metrics, so that a stuck replica fails the run instead of hanging it.
const adminTimeout = 30 * time.Second

// env is the environment the replicas get on top of this process's.
func (b *bench) env() []string {
	var env []string
	if b.tuneOnly != "" && b.tuneOnly != b.kind {
		return nil
	}
	if b.gogc != "" {
		env = append(env, "GOGC="+b.gogc)
	}
	if b.gomaxprocs > 0 {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", b.gomaxprocs))
	}
	return env
}

// withEnv runs start with env (KEY=value) added to this process's
// environment, which the processes it starts inherit; this process's own
// runtime was set up at its start and does not change.
func withEnv(env []string, start func() error) error {
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		defer func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		}()
	}
	return start()
}

func startReplica(ctx context.Context, bin, name string, env []string, onLine func(time.Time, string), storeArgs []string) (*replica, error) {
	var s *weftbin.Server
	err := withEnv(env, func() (err error) {
		s, err = weftbin.StartServerLines(ctx, bin, name, onLine, append([]string{"--region", "us-east-1", "--account-id", account,
			"--appmesh-limits", "virtualNodesPerMesh=100000"}, storeArgs...)...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &replica{s}, nil
}

// streams is the number of ADS streams the replica lists on /v1/proxies.
func (r *replica) streams() (int, error) {
	resp, err := (&http.Client{Timeout: adminTimeout}).Get("http://" + r.API + "/v1/proxies")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Proxies []struct {
			Replicas int `json:"replicas"`
		} `json:"proxies"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
		return 0, fmt.Errorf("/v1/proxies of %s: %w", r.Name, err)
	}
	n := 0
	for _, p := range out.Proxies {
		n += p.Replicas
	}
	return n, nil
}

// memory is the replica's resident set (from /proc) and Go heap in use
// (from its /metrics), in bytes.
func (r *replica) memory() (rss, heap float64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.Pid()))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseFloat(f[1], 64)
			rss = v * 1024
		}
	}
	resp, err := (&http.Client{Timeout: adminTimeout}).Get("http://" + r.API + "/metrics")
	if err != nil {
		return rss, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			heap, _ = strconv.ParseFloat(v, 64)
		}
	}
	return rss, heap
}

// tracker counts the proxies that applied route weight want.
type tracker struct {
	mu      sync.Mutex
	want    uint32
	missing int
	at      []applied // when each proxy applied it, and on which replica
	reached chan struct{}
}

type applied struct {
	at      time.Time
	replica int
}

func (t *tracker) arm(want uint32, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.want, t.missing, t.at, t.reached = want, n, t.at[:0], make(chan struct{})
}

// applied is called by a proxy on replica that accepted the routes of write w,
// having had prev before.
func (t *tracker) applied(prev, w uint32, at time.Time, replica int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w >= t.want && prev < t.want && t.missing > 0 {
		t.at = append(t.at, applied{at, replica})
		t.missing--
		if t.missing == 0 {
			close(t.reached)
		}
	}
}

// wait returns how many proxies had not applied it within d.
func (t *tracker) wait(ctx context.Context, d time.Duration) int {
	t.mu.Lock()
	ch := t.reached
	t.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.missing
}

func (t *tracker) latencies(since time.Time) []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]time.Duration, 0, len(t.at))
	for _, a := range t.at {
		out = append(out, a.at.Sub(since))
	}
	return out
}

func (t *tracker) applies() []applied {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.at)
}

func pct(d []time.Duration, p int) time.Duration { return d[(len(d)-1)*p/100] }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
