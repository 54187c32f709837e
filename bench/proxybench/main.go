// Command proxybench measures weft proxy against the app reached directly
// and against haproxy, side by side in one run, and prints the markdown
// table of docs/bench/proxy.md.
//
// For each path (direct, one weft proxy, two weft proxies as sidecar to
// sidecar, haproxy, and a Go TCP relay that parses nothing, the floor for
// any Go proxy on the machine) it runs a constant-rate load (wrk2-style:
// requests are scheduled at a fixed rate and latency counts from the
// scheduled time, so a stall shows up as latency instead of being hidden),
// interleaved between the paths in slices so that all see the same noise,
// then a saturation load with wrk, and reads the processes' CPU time and
// memory (RSS, PSS, private) from /proc. With -h2c it measures the same
// paths over HTTP/2 without TLS (h2c.go). With -evloop it measures the
// event-loop prototype of the HTTP/1.1 path (bench/evloopproxy) as well.
// With -appmesh it measures instead two sidecars as App Mesh configures
// them, behind iptables interception in network namespaces (appmesh.go).
//
//	go build -o /tmp/weft ./cmd/weft && go run ./bench/proxybench -weft /tmp/weft
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// opts are the flags of the run over the paths (all but -appmesh's and
// -relay's, which main reads itself), set once by main.
type opts struct {
	weft, weftB         string
	weftBArgs           string   // -weft-b-args as given, for the B paths' line
	aArgs, bArgs        []string // -weft-args and -weft-b-args, split
	rate, conns, rounds int
	dur, heyDur, satDur time.Duration
	satConns            int
	satRounds           int
	fixedOrder          bool
	profile, profPath   string
	only, skip          string
	hold                bool
	tracing             bool
	tracingOnly         string
	tracingRates        []string               // the tracing paths' sample rates (tracingonly.go)
	keepPath            func(name string) bool // which paths -tracing-only keeps
	idleN               int
	idleSettle          time.Duration
	idleProf            string
	evloop, evloopBArgs string
	evloopLoops         int
	h2c, h2tls          bool
	h2cConns            int
	h2cSatConns         int
	h2cSatStreams       int
	mem                 bool
	slowest             int
	paired              time.Duration
}

// h2 reports whether the run has HTTP/2 paths: h2c, and h2 over mutual
// TLS with app direct h2c as their baseline.
func (o opts) h2() bool {
	return h2cWanted(o.h2c || o.h2tls, o.only) || h2tlsWanted(o.h2tls, o.only)
}

// slice is the length of one fixed-rate slice.
func (o opts) slice() time.Duration { return o.dur / time.Duration(o.rounds) }

func main() {
	var o opts
	flag.StringVar(&o.weft, "weft", "", "path to a built weft binary (go build -o /tmp/weft ./cmd/weft)")
	flag.IntVar(&o.rate, "rate", 1000, "constant request rate for the fixed-rate run")
	flag.DurationVar(&o.dur, "duration", 20*time.Second, "length of each fixed-rate run")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved slices each path's fixed-rate run is split into")
	flag.DurationVar(&o.heyDur, "hey-duration", 10*time.Second, "length of each path's fixed-rate run with hey (Debian's hey, -q per connection), a cross-check of the generator; 0 skips it")
	flag.DurationVar(&o.satDur, "sat-duration", 10*time.Second, "length of each wrk saturation run")
	flag.IntVar(&o.conns, "conns", 16, "connections of the fixed-rate load generator")
	flag.IntVar(&o.satConns, "sat-conns", 64, "wrk connections at saturation")
	flag.BoolVar(&o.fixedOrder, "fixed-order", false, "the fixed-rate run's slices in the paths' own order every round (before round 37's runs; by default each round's order is drawn anew)")
	flag.IntVar(&o.satRounds, "sat-rounds", 1, "saturation runs per path: over 1, the paths take turns round by round, their order reversed every other round, and each weft proxy path's rate is divided by its haproxy twin's in each round (satrounds.go); TLS paths are left out")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of the single proxy during its fixed-rate run to this file")
	procs := flag.Int("concurrency", 0, "weft proxy --concurrency (0: every core)")
	flag.StringVar(&o.only, "only", "", "run only the paths whose name contains this (or, comma-separated, any of these)")
	flag.StringVar(&o.skip, "skip", "", "leave out the paths whose name contains this (or, comma-separated, any of these; e.g. mTLS)")
	flag.BoolVar(&o.hold, "hold", false, "set everything up, print addresses and pids, and wait for Ctrl-C (to profile by hand)")
	relay := flag.String("relay", "", "internal: run the Go TCP relay on this address (to -relay-to) instead of the bench")
	relayTo := flag.String("relay-to", "", "internal: the relay's upstream")
	flag.BoolVar(&o.tracing, "tracing", false, "add the paths \"one weft proxy, tracing 1%\" and \"... 100%\": the same sidecar exporting spans over OTLP gRPC to a collector in the bench process")
	flag.StringVar(&o.tracingOnly, "tracing-only", "", "comma-separated sample rates (e.g. 0.01): run only tracing's overhead, the tracing paths at these rates next to \"one weft proxy\" and \"one weft proxy B\" (implies -tracing; see tracingonly.go)")
	flag.IntVar(&o.idleN, "idle-conns", 0, "after the other runs, open this many keep-alive connections to each one-proxy path, plaintext and mutual TLS (one request each, then idle) and report the proxy's memory per idle connection; 0 skips it")
	flag.DurationVar(&o.idleSettle, "idle-settle", 3*time.Second, "with -idle-conns: how long the connections stay idle before the proxy's memory is measured (Go returns freed memory to the system after a GC, which an idle process runs every 2 minutes)")
	flag.StringVar(&o.idleProf, "idle-heap-profile", "", "with -idle-conns: save each weft proxy's heap profile with the connections open to this prefix + pid + .pb.gz")
	flag.StringVar(&o.weftB, "weft-b", "", "a second weft binary (the build before a change, say): adds the paths \"one weft proxy B\" and \"two weft proxies B\" (both sidecars B) served by it, interleaved with the others, and prints its ratios to \"one weft proxy\"")
	weftArgs := flag.String("weft-args", "", "extra weft proxy arguments, space-separated, for the proxies of the paths run by -weft (not the B paths), e.g. \"--experimental-evloop\"")
	flag.StringVar(&o.weftBArgs, "weft-b-args", "", "extra weft proxy arguments, space-separated, for the proxies of the \"B\" paths (with -weft-b, which may name the same binary as -weft: the same build with another setting, e.g. \"--park-idle-after=1ns\")")
	flag.StringVar(&o.evloop, "evloop", "", "a built bench/evloopproxy (go build -o /tmp/evloopproxy ./bench/evloopproxy): adds the paths \"evloop prototype\" and \"two evloop prototypes\", the event-loop prototype of the HTTP/1.1 path (internal/proxy/evloop) with the same route as one weft proxy")
	flag.IntVar(&o.evloopLoops, "evloop-loops", 0, "with -evloop: its event loops (0: GOMAXPROCS)")
	flag.StringVar(&o.evloopBArgs, "evloop-b-args", "", "with -evloop: add the path \"evloop prototype B\", the prototype with these extra arguments, space-separated (e.g. -lock-threads)")
	flag.BoolVar(&accessLogs, "access-log", false, "give every weft proxy's listener a file access log on /dev/stdout in Envoy's default format, as App Mesh configures a virtual node's logging (the proxies' output goes to files in the bench's temporary directory); adds the path \"haproxy, access log\", haproxy logging the same fields to its stdout (accesslog.go)")
	flag.BoolVar(&o.h2c, "h2c", false, "add the h2c paths (\"... h2c\": the app, one and two weft proxies as for an http2 listener, one and two haproxies, HTTP/2 without TLS on every hop; see h2c.go); -only naming h2c adds them too")
	flag.BoolVar(&h2cUpstreamH1, "h2c-upstream-h1", false, "on the h2c paths, the proxies speak HTTP/1.1 to their upstreams (clusters without http2_protocol_options, haproxy servers without proto h2): h2c on the client's hop only, what weft proxy --h2loops serves on its loops")
	flag.BoolVar(&o.h2tls, "h2-mtls", false, "add the HTTP/2-over-mutual-TLS paths (\"... h2 mTLS\": one and two weft proxies as App Mesh's sidecars of an http2 or grpc node with TLS, HTTP/2 over mutual TLS into the first, h2c to the app; one and two haproxies; see h2tls.go), with the h2c paths (app direct h2c is their baseline); -only naming \"h2 mTLS\" adds them too")
	flag.IntVar(&o.h2cConns, "h2c-conns", 4, "HTTP/2 connections of the fixed-rate generator on the h2c paths (its -conns senders share them)")
	flag.IntVar(&o.h2cSatConns, "h2c-sat-conns", 16, "h2load connections at saturation on the h2c paths")
	flag.IntVar(&o.h2cSatStreams, "h2c-sat-streams", 4, "h2load concurrent streams per connection at saturation on the h2c paths")
	appBin := flag.String("app", "", "the weft binary that runs the app (weft colorapp; it must speak h2c for the h2c paths); default -weft")
	flag.StringVar(&o.profPath, "profile-path", "one weft proxy", "with -profile: the path whose (first) proxy is profiled")
	flag.BoolVar(&o.mem, "mem", false, "at the end of each path's last fixed-rate slice, break each weft proxy's memory down: anonymous and file-backed resident pages (smaps_rollup) and, from its admin /memory (runtime/metrics; no --pprof), Go heap objects, heap free and the rest the runtime holds")
	appmeshOn := flag.Bool("appmesh", false, "instead of the other paths: two sidecars as App Mesh configures them, in network namespaces with weft intercept's iptables, configured over xDS by weft server (-weft) from a mesh made through the App Mesh API, against the app reached directly and two haproxies as the sidecars of two more intercepted tasks; with -weft-b, that build's server and sidecars as well; needs root (appmesh.go)")
	appmeshLog := flag.Bool("appmesh-log", false, "with -appmesh: the virtual nodes log to /dev/stdout, and the haproxies log too")
	appmeshProxy := flag.String("appmesh-proxy", "", "with -appmesh: the binary that runs the sidecars, weft or weft-proxy of -weft's build (default -weft)")
	appmeshProxyB := flag.String("appmesh-proxy-b", "", "with -appmesh and -weft-b: the binary that runs the B sidecars (default -weft-b)")
	flag.IntVar(&o.slowest, "slowest", 0, "after the fixed-rate run, print each path's N slowest requests with their scheduled time (UTC) and the GCs they overlapped (tail.go)")
	gcTimes := flag.Bool("gc-times", false, "run the weft proxies with --pprof and read their GC times after the fixed-rate run: the tail table then says how many of the slowest requests overlapped a GC of their path's proxies")
	weftEnv := flag.String("weft-env", "", "extra environment of the proxies of the paths run by -weft (not the B paths), space-separated NAME=value, e.g. \"GOGC=off\" or \"GODEBUG=gctrace=1\"")
	weftBEnv := flag.String("weft-b-env", "", "extra environment of the proxies of the HTTP/1.1 \"B\" paths, as -weft-env")
	flag.DurationVar(&o.paired, "paired", 0, "after the fixed-rate run, run every path at once for this long, -rate requests/s in total, taking turns request by request, in -rounds parts, and print their tail (paired.go); 0 skips it")
	genGOGC := flag.Int("gen-gogc", 1000, "the generator's (this process's) GOGC during the runs: its own collections stall its senders, and every path's tail with them (docs/bench/proxy.md, round 12); 0 keeps GOGC from the environment")
	handshakes := flag.Int("handshakes", 0, "instead of the other runs: measure full mutual-TLS handshakes (a new connection from a client without a session cache, one GET) into one weft proxy, mTLS in (and its B twin with -weft-b) and haproxy, mTLS in: this many sequential ones per path, whose proxy CPU time is read, then -handshake-bursts bursts of -conns concurrent ones, interleaved in -rounds; with -profile, a CPU profile of the -weft proxy over as many more (handshake.go)")
	hsBursts := flag.Int("handshake-bursts", 50, "with -handshakes: bursts of -conns concurrent handshakes per path")
	hsIdle := flag.Duration("handshake-idle", 20*time.Second, "with -handshakes: how long every proxy is left idle before each cold burst (a fixed-rate slice finds its path's proxy idle for the other paths' slices)")
	hsSlices := flag.Int("handshake-slices", 0, "with -handshakes: fixed-rate slices of -handshake-slice per path, in turn, each opening -conns new connections at -rate as the whole run's slices do")
	hsSlice := flag.Duration("handshake-slice", 500*time.Millisecond, "with -handshake-slices: each slice's length")
	hsSliceIdle := flag.Duration("handshake-slice-idle", 0, "with -handshake-slices: how long every proxy is left idle before each turn of slices")
	hsCold := flag.Int("handshake-cold", 0, "with -handshakes: cold bursts per path, each after -handshake-idle, after the others")
	logDir := flag.String("logdir", "", "keep the processes' logs and configuration in this directory (made if missing) instead of a temporary one removed at the end")
	flag.Parse()
	o.bArgs = strings.Fields(o.weftBArgs)
	o.aArgs = strings.Fields(*weftArgs)
	if *relay != "" {
		runRelay(*relay, *relayTo)
		return
	}
	if o.weft == "" {
		log.Fatal("-weft is required")
	}
	if *appmeshOn {
		if err := runAppMesh(appmeshOpts{weft: o.weft, weftB: o.weftB, proxy: *appmeshProxy, proxyB: *appmeshProxyB, args: o.aArgs, argsB: o.bArgs, app: *appBin, logs: *appmeshLog, hold: o.hold, rate: o.rate, conns: o.conns,
			rounds: o.rounds, satConns: o.satConns, dur: o.dur, satDur: o.satDur}); err != nil {
			log.Fatal(err)
		}
		return
	}
	var err error
	o.tracingRates, o.keepPath, err = tracingOnly(o.tracingOnly)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *genGOGC > 0 {
		debug.SetGCPercent(*genGOGC)
	}
	b := &bench{weft: o.weft, app: *appBin, pprof: o.profile != "" || *gcTimes, gomaxprocs: *procs,
		envA: strings.Fields(*weftEnv), envB: strings.Fields(*weftBEnv)}
	if *logDir != "" {
		if err := os.MkdirAll(*logDir, 0o755); err != nil {
			log.Fatal(err)
		}
		b.dir = *logDir
	} else {
		b.dir = mustTemp()
		defer os.RemoveAll(b.dir)
	}
	defer b.stopAll()
	if *handshakes > 0 {
		b.handshakeRun(ctx, o, *handshakes, *hsBursts, *hsIdle, *hsCold, *hsSlices, *hsSlice, *hsSliceIdle)
		return
	}
	b.run(ctx, o)
}

// run sets the paths up, measures them and prints the report, in this
// order: the fixed-rate run, hey's cross-check and the saturation runs,
// then their tables, the paired run, and the idle connections. Its
// deferred calls (the access logs' sizes, the spans received) print last.
func (b *bench) run(ctx context.Context, o opts) {
	app := b.startApp()
	xds := startXDS(ctx)
	targets, k := b.h1Paths(xds, app, o.aArgs, o.hold)
	// -hold with HTTP/2 paths waits once those are set up too.
	holdH2 := o.hold && o.h2()
	if o.hold && !holdH2 {
		waitSignal()
		return
	}
	if accessLogs { // accesslog.go
		targets = append(targets, b.accessLogPath(app))
		defer b.logBytes()
	}
	if o.weftB != "" {
		targets = b.bPaths(targets, xds, k, app, o)
	}
	nH1 := len(targets)
	if o.h2() {
		targets = append(targets, b.h2cTargets(xds, app, o.aArgs, o.weftB, o.bArgs)...)
	}
	if h2tlsWanted(o.h2tls, o.only) {
		targets = append(targets, b.h2tlsTargets(xds, k, app, o.aArgs, o.weftB, o.bArgs)...)
	}
	if holdH2 {
		for _, t := range targets[nH1:] {
			var pids []string
			for _, p := range t.procs {
				pids = append(pids, fmt.Sprintf("%d (admin %s)", p.Pid, b.admin[p.Pid]))
			}
			fmt.Printf("%s %s (pids %s)\n", t.name, t.url, strings.Join(pids, ", "))
		}
		waitSignal()
		return
	}
	if o.evloop != "" {
		targets = append(targets, b.evloopTargets(o.evloop, o.evloopLoops, app)...)
		if o.evloopBArgs != "" {
			targets = append(targets, b.evloopB(o.evloop, o.evloopLoops, app, strings.Fields(o.evloopBArgs)))
		}
	}
	if o.tracing || o.tracingOnly != "" {
		otlp := startCollector()
		targets = append(targets, b.tracingPaths(xds, app, otlp.addr, o.tracingRates, o.aArgs)...)
		defer func() { fmt.Printf("\nSpans received by the bench's OTLP collector: %d\n", otlp.count.Load()) }()
	}
	fmt.Print(machine(o.weft))
	var run []target
	for _, t := range targets {
		if t.url != "" && selected(t.name, o.only, o.skip) && o.keepPath(t.name) {
			run = append(run, t)
		}
	}
	for _, t := range run {
		if isH2C(t.name) {
			constantRateH2C(t.url, 500, 2*time.Second, 8, o.h2cConns, t.tls)
			continue
		}
		warm(t.url, t.tls)
	}
	fixed := b.fixedRate(run, o)
	tl := b.tails(run, fixed.paths, o.conns)
	rep := b.fixedReport(run, fixed.paths)
	heyRows := heyCrossCheck(run, o)
	var h2cSat, sat []string
	var satRuns []satRun
	satRPS := map[string]float64{}
	if o.satRounds > 1 {
		satRuns = interleavedSaturation(run, o)
		satRPS = satMedians(satRuns)
	} else {
		h2cSat = h2cSaturation(run, o.satDur, o.h2cSatConns, o.h2cSatStreams, satRPS)
		sat = saturation(run, o.satDur, o.satConns, satRPS)
	}
	printFixed(o, fixed, rep)
	printTail("fixed-rate run", tl.rows)
	printVersus(versusHAProxy(tl.names, tl.runs, 0.5))
	printVersus(versusHAProxy(tl.names, tl.runs, 0.99))
	if o.paired > 0 {
		b.pairedRun(run, o)
	}
	if o.slowest > 0 {
		printSlowest(tl.names, tl.runs, tl.gcs, tl.own, o.slowest)
	}
	printHey(heyRows, o)
	printSaturation(sat, o.satDur, o.satConns)
	printH2CSaturation(h2cSat, o.satDur, o.h2cSatConns, o.h2cSatStreams)
	printInterleavedSaturation(satRuns, o)
	printGoals(goalRows(rep, tl, satRPS))
	if o.idleN > 0 {
		b.idleRun(xds, k, app, o)
	}
}

// waitSignal waits for Ctrl-C or SIGTERM (-hold).
func waitSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
