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
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

func main() {
	weft := flag.String("weft", "", "path to a built weft binary (go build -o /tmp/weft ./cmd/weft)")
	rate := flag.Int("rate", 1000, "constant request rate for the fixed-rate run")
	dur := flag.Duration("duration", 20*time.Second, "length of each fixed-rate run")
	rounds := flag.Int("rounds", 5, "interleaved slices each path's fixed-rate run is split into")
	heyDur := flag.Duration("hey-duration", 10*time.Second, "length of each path's fixed-rate run with hey (Debian's hey, -q per connection), a cross-check of the generator; 0 skips it")
	satDur := flag.Duration("sat-duration", 10*time.Second, "length of each wrk saturation run")
	conns := flag.Int("conns", 16, "connections of the fixed-rate load generator")
	satConns := flag.Int("sat-conns", 64, "wrk connections at saturation")
	profile := flag.String("profile", "", "write a CPU profile of the single proxy during its fixed-rate run to this file")
	procs := flag.Int("concurrency", 0, "weft proxy --concurrency (0: every core)")
	only := flag.String("only", "", "run only the paths whose name contains this (or, comma-separated, any of these)")
	skip := flag.String("skip", "", "leave out the paths whose name contains this (e.g. mTLS)")
	hold := flag.Bool("hold", false, "set everything up, print addresses and pids, and wait for Ctrl-C (to profile by hand)")
	relay := flag.String("relay", "", "internal: run the Go TCP relay on this address (to -relay-to) instead of the bench")
	relayTo := flag.String("relay-to", "", "internal: the relay's upstream")
	tracingPaths := flag.Bool("tracing", false, "add the paths \"one weft proxy, tracing 1%\" and \"... 100%\": the same sidecar exporting spans over OTLP gRPC to a collector in the bench process")
	tracingOnlyList := flag.String("tracing-only", "", "comma-separated sample rates (e.g. 0.01): run only tracing's overhead, the tracing paths at these rates next to \"one weft proxy\" and \"one weft proxy B\" (implies -tracing; see tracingonly.go)")
	idleN := flag.Int("idle-conns", 0, "after the other runs, open this many keep-alive connections to each one-proxy path, plaintext and mutual TLS (one request each, then idle) and report the proxy's memory per idle connection; 0 skips it")
	idleSettle := flag.Duration("idle-settle", 3*time.Second, "with -idle-conns: how long the connections stay idle before the proxy's memory is measured (Go returns freed memory to the system after a GC, which an idle process runs every 2 minutes)")
	idleProf := flag.String("idle-heap-profile", "", "with -idle-conns: save each weft proxy's heap profile with the connections open to this prefix + pid + .pb.gz")
	weftB := flag.String("weft-b", "", "a second weft binary (the build before a change, say): adds the paths \"one weft proxy B\" and \"two weft proxies B\" (both sidecars B) served by it, interleaved with the others, and prints its ratios to \"one weft proxy\"")
	weftArgs := flag.String("weft-args", "", "extra weft proxy arguments, space-separated, for the proxies of the paths run by -weft (not the B paths), e.g. \"--experimental-evloop\"")
	weftBArgs := flag.String("weft-b-args", "", "extra weft proxy arguments, space-separated, for the proxies of the \"B\" paths (with -weft-b, which may name the same binary as -weft: the same build with another setting, e.g. \"--park-idle-after=1ns\")")
	evloopBin := flag.String("evloop", "", "a built bench/evloopproxy (go build -o /tmp/evloopproxy ./bench/evloopproxy): adds the paths \"evloop prototype\" and \"two evloop prototypes\", the event-loop prototype of the HTTP/1.1 path (internal/proxy/evloop) with the same route as one weft proxy")
	evloopLoops := flag.Int("evloop-loops", 0, "with -evloop: its event loops (0: GOMAXPROCS)")
	evloopB := flag.String("evloop-b-args", "", "with -evloop: add the path \"evloop prototype B\", the prototype with these extra arguments, space-separated (e.g. -lock-threads)")
	flag.BoolVar(&accessLogs, "access-log", false, "give every weft proxy's listener a file access log on /dev/stdout in Envoy's default format, as App Mesh configures a virtual node's logging (the proxies' output goes to files in the bench's temporary directory); adds the path \"haproxy, access log\", haproxy logging the same fields to its stdout (accesslog.go)")
	h2cOn := flag.Bool("h2c", false, "add the h2c paths (\"... h2c\": the app, one and two weft proxies as for an http2 listener, one and two haproxies, HTTP/2 without TLS on every hop; see h2c.go); -only naming h2c adds them too")
	flag.BoolVar(&h2cUpstreamH1, "h2c-upstream-h1", false, "on the h2c paths, the proxies speak HTTP/1.1 to their upstreams (clusters without http2_protocol_options, haproxy servers without proto h2): h2c on the client's hop only, what weft proxy --h2loops serves on its loops")
	h2tlsOn := flag.Bool("h2-mtls", false, "add the HTTP/2-over-mutual-TLS paths (\"... h2 mTLS\": one and two weft proxies as App Mesh's sidecars of an http2 or grpc node with TLS, HTTP/2 over mutual TLS into the first, h2c to the app; one and two haproxies; see h2tls.go), with the h2c paths (app direct h2c is their baseline); -only naming \"h2 mTLS\" adds them too")
	h2cConns := flag.Int("h2c-conns", 4, "HTTP/2 connections of the fixed-rate generator on the h2c paths (its -conns senders share them)")
	h2cSatConns := flag.Int("h2c-sat-conns", 16, "h2load connections at saturation on the h2c paths")
	h2cSatStreams := flag.Int("h2c-sat-streams", 4, "h2load concurrent streams per connection at saturation on the h2c paths")
	appBin := flag.String("app", "", "the weft binary that runs the app (weft colorapp; it must speak h2c for the h2c paths); default -weft")
	profPath := flag.String("profile-path", "one weft proxy", "with -profile: the path whose (first) proxy is profiled")
	memBreak := flag.Bool("mem", false, "at the end of each path's last fixed-rate slice, break each weft proxy's memory down: anonymous and file-backed resident pages (smaps_rollup) and, from its admin /memory (runtime/metrics; no --pprof), Go heap objects, heap free and the rest the runtime holds")
	appmeshOn := flag.Bool("appmesh", false, "instead of the other paths: two sidecars as App Mesh configures them, in network namespaces with weft intercept's iptables, configured over xDS by weft server (-weft) from a mesh made through the App Mesh API, against the app reached directly and two haproxies as the sidecars of two more intercepted tasks; with -weft-b, that build's server and sidecars as well; needs root (appmesh.go)")
	appmeshLog := flag.Bool("appmesh-log", false, "with -appmesh: the virtual nodes log to /dev/stdout, and the haproxies log too")
	appmeshProxy := flag.String("appmesh-proxy", "", "with -appmesh: the binary that runs the sidecars, weft or weft-proxy of -weft's build (default -weft)")
	appmeshProxyB := flag.String("appmesh-proxy-b", "", "with -appmesh and -weft-b: the binary that runs the B sidecars (default -weft-b)")
	nSlowest := flag.Int("slowest", 0, "after the fixed-rate run, print each path's N slowest requests with their scheduled time (UTC) and the GCs they overlapped (tail.go)")
	gcTimes := flag.Bool("gc-times", false, "run the weft proxies with --pprof and read their GC times after the fixed-rate run: the tail table then says how many of the slowest requests overlapped a GC of their path's proxies")
	weftEnv := flag.String("weft-env", "", "extra environment of the proxies of the paths run by -weft (not the B paths), space-separated NAME=value, e.g. \"GOGC=off\" or \"GODEBUG=gctrace=1\"")
	weftBEnv := flag.String("weft-b-env", "", "extra environment of the proxies of the HTTP/1.1 \"B\" paths, as -weft-env")
	paired := flag.Duration("paired", 0, "after the fixed-rate run, run the HTTP/1.1 paths at once for this long, -rate requests/s in total, taking turns request by request, in -rounds parts, and print their tail (paired.go); 0 skips it")
	genGOGC := flag.Int("gen-gogc", 1000, "the generator's (this process's) GOGC during the runs: its own collections stall its senders, and every path's tail with them (docs/bench/proxy.md, round 12); 0 keeps GOGC from the environment")
	logDir := flag.String("logdir", "", "keep the processes' logs and configuration in this directory (made if missing) instead of a temporary one removed at the end")
	flag.Parse()
	bArgs := strings.Fields(*weftBArgs)
	aArgs := strings.Fields(*weftArgs)
	if *relay != "" {
		runRelay(*relay, *relayTo)
		return
	}
	if *weft == "" {
		log.Fatal("-weft is required")
	}
	if *appmeshOn {
		if err := runAppMesh(appmeshOpts{weft: *weft, weftB: *weftB, proxy: *appmeshProxy, proxyB: *appmeshProxyB, args: aArgs, argsB: bArgs, app: *appBin, logs: *appmeshLog, hold: *hold, rate: *rate, conns: *conns,
			rounds: *rounds, satConns: *satConns, dur: *dur, satDur: *satDur}); err != nil {
			log.Fatal(err)
		}
		return
	}
	tracingRates, keepPath, err := tracingOnly(*tracingOnlyList)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *genGOGC > 0 {
		debug.SetGCPercent(*genGOGC)
	}
	b := &bench{weft: *weft, app: *appBin, pprof: *profile != "" || *gcTimes, gomaxprocs: *procs,
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

	app := b.startApp()
	xds := startXDS(ctx)
	pB, pA := freePort(), freePort()
	// Proxy B is the server's sidecar: ingress to the local app. Proxy A
	// is the client's sidecar: egress to proxy B. Shaped like App Mesh's
	// (weighted cluster, 15 s timeout, retry policy, circuit breakers
	// wide open).
	xds.set("mesh/bench/virtualNode/server", resources("ingress", pB, "cds_ingress_bench_server_http_9080", app, true))
	xds.set("mesh/bench/virtualNode/client", resources("egress", pA, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pB), false))
	procB := b.startProxy(b.weft, "mesh/bench/virtualNode/server", xds.addr, aArgs...)
	procA := b.startProxy(b.weft, "mesh/bench/virtualNode/client", xds.addr, aArgs...)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pB))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pA))
	pH := freePort()
	procH := b.startHAProxy(pH, app)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pH))
	pR := freePort()
	procR := b.startRelay(pR, app)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pR))
	// The same two-hop chains with haproxy and with the relay: what two
	// hops cost on this machine for a C proxy and for Go's floor.
	pH2 := freePort()
	procH2 := b.startHAProxy(pH2, fmt.Sprintf("127.0.0.1:%d", pH))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pH2))
	pR2 := freePort()
	procR2 := b.startRelay(pR2, fmt.Sprintf("127.0.0.1:%d", pR))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pR2))
	// The mutual-TLS paths: the same sidecars with TLS between them as in
	// a mesh (STRICT listener with validation, enforced client policy),
	// and haproxy doing the same.
	k := newPKI(b.dir)
	pBT, pAT := freePort(), freePort()
	xds.set("mesh/bench/virtualNode/server-tls", k.withMTLS(resources("ingress", pBT, "cds_ingress_bench_server_http_9080", app, true), true, false))
	xds.set("mesh/bench/virtualNode/client-tls", k.withMTLS(resources("egress", pAT, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pBT), false), false, true))
	procBT := b.startProxy(b.weft, "mesh/bench/virtualNode/server-tls", xds.addr, aArgs...)
	procAT := b.startProxy(b.weft, "mesh/bench/virtualNode/client-tls", xds.addr, aArgs...)
	waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/", pBT), k.clientTLS())
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pAT))
	pHT, pHT2 := freePort(), freePort()
	b.startHAProxyTLS(k, pHT, app, true, false)
	procHT := b.procs[len(b.procs)-1].Process
	waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/", pHT), k.clientTLS())
	b.startHAProxyTLS(k, pHT2, fmt.Sprintf("127.0.0.1:%d", pHT), false, true)
	procHT2 := b.procs[len(b.procs)-1].Process
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pHT2))

	// -hold with HTTP/2 paths waits once those are set up too.
	holdH2 := *hold && (h2cWanted(*h2cOn || *h2tlsOn, *only) || h2tlsWanted(*h2tlsOn, *only))
	waitSignal := func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
	}
	if *hold {
		fmt.Printf("app %s (pid %d)\none weft proxy http://127.0.0.1:%d/ (pid %d, admin %s)\ntwo weft proxies http://127.0.0.1:%d/ (pid %d, admin %s)\nhaproxy http://127.0.0.1:%d/ (pid %d)\nGo TCP relay http://127.0.0.1:%d/ (pid %d)\none weft proxy, mTLS in https://127.0.0.1:%d/ (pid %d, admin %s; client certificate in %s)\nlogs in %s\n",
			app, b.appPid, pB, procB.Pid, b.admin[procB.Pid], pA, procA.Pid, b.admin[procA.Pid], pH, procH.Pid, pR, procR.Pid, pBT, procBT.Pid, b.admin[procBT.Pid], b.dir, b.dir)
		if !holdH2 {
			waitSignal()
			return
		}
	}
	appProc, _ := os.FindProcess(b.appPid)
	targets := []target{
		{"app direct", "http://" + app + "/", []*os.Process{appProc}, nil},
		{"one weft proxy", fmt.Sprintf("http://127.0.0.1:%d/", pB), []*os.Process{procB}, nil},
		{"one weft proxy B", "", nil, nil}, // with -weft-b only
		{"two weft proxies (sidecar to sidecar)", fmt.Sprintf("http://127.0.0.1:%d/", pA), []*os.Process{procA, procB}, nil},
		{"haproxy", fmt.Sprintf("http://127.0.0.1:%d/", pH), []*os.Process{procH}, nil},
		{"two haproxies", fmt.Sprintf("http://127.0.0.1:%d/", pH2), []*os.Process{procH2, procH}, nil},
		{"Go TCP relay (no HTTP: a Go proxy's floor)", fmt.Sprintf("http://127.0.0.1:%d/", pR), []*os.Process{procR}, nil},
		{"two Go TCP relays", fmt.Sprintf("http://127.0.0.1:%d/", pR2), []*os.Process{procR2, procR}, nil},
		{"one weft proxy, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pBT), []*os.Process{procBT}, k.clientTLS()},
		{"two weft proxies, mTLS between", fmt.Sprintf("http://127.0.0.1:%d/", pAT), []*os.Process{procAT, procBT}, nil},
		{"haproxy, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pHT), []*os.Process{procHT}, k.clientTLS()},
		{"two haproxies, mTLS between", fmt.Sprintf("http://127.0.0.1:%d/", pHT2), []*os.Process{procHT2, procHT}, nil},
	}
	if accessLogs { // accesslog.go
		pHL := freePort()
		procHL := b.startHAProxyLogged(pHL, app)
		waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pHL))
		targets = append(targets, target{"haproxy, access log", fmt.Sprintf("http://127.0.0.1:%d/", pHL), []*os.Process{procHL}, nil})
		defer b.logBytes()
	}
	if *weftB != "" {
		// The same sidecar as proxy B, run by the other binary.
		pBB := freePort()
		xds.set("mesh/bench/virtualNode/server-b", resources("ingress", pBB, "cds_ingress_bench_server_http_9080", app, true))
		procBB := b.startProxyB(*weftB, "mesh/bench/virtualNode/server-b", xds.addr, bArgs...)
		waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pBB))
		targets[2].url, targets[2].procs = fmt.Sprintf("http://127.0.0.1:%d/", pBB), []*os.Process{procBB}
		// And the client's sidecar in front of it, by the same binary:
		// both hops B.
		pBA := freePort()
		xds.set("mesh/bench/virtualNode/client-b", resources("egress", pBA, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pBB), false))
		procBA := b.startProxyB(*weftB, "mesh/bench/virtualNode/client-b", xds.addr, bArgs...)
		waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pBA))
		targets = append(targets, target{"two weft proxies B", fmt.Sprintf("http://127.0.0.1:%d/", pBA), []*os.Process{procBA, procBB}, nil})
		// The mutual-TLS sidecars, both by the other binary.
		pBBT, pBAT := freePort(), freePort()
		xds.set("mesh/bench/virtualNode/server-tls-b", k.withMTLS(resources("ingress", pBBT, "cds_ingress_bench_server_http_9080", app, true), true, false))
		xds.set("mesh/bench/virtualNode/client-tls-b", k.withMTLS(resources("egress", pBAT, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pBBT), false), false, true))
		procBBT := b.startProxyB(*weftB, "mesh/bench/virtualNode/server-tls-b", xds.addr, bArgs...)
		procBAT := b.startProxyB(*weftB, "mesh/bench/virtualNode/client-tls-b", xds.addr, bArgs...)
		waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/", pBBT), k.clientTLS())
		waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pBAT))
		targets = append(targets,
			target{"one weft proxy B, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pBBT), []*os.Process{procBBT}, k.clientTLS()},
			target{"two weft proxies B, mTLS between", fmt.Sprintf("http://127.0.0.1:%d/", pBAT), []*os.Process{procBAT, procBBT}, nil})
		fmt.Printf("one weft proxy B, two weft proxies B: %s %s\n", *weftB, *weftBArgs)
	}
	nH1 := len(targets)
	if h2cWanted(*h2cOn || *h2tlsOn, *only) || h2tlsWanted(*h2tlsOn, *only) {
		targets = append(targets, b.h2cTargets(xds, app, aArgs, *weftB, bArgs)...)
	}
	if h2tlsWanted(*h2tlsOn, *only) {
		targets = append(targets, b.h2tlsTargets(xds, k, app, aArgs, *weftB, bArgs)...)
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
	if *evloopBin != "" {
		targets = append(targets, b.evloopTargets(*evloopBin, *evloopLoops, app)...)
		if *evloopB != "" {
			targets = append(targets, b.evloopB(*evloopBin, *evloopLoops, app, strings.Fields(*evloopB)))
		}
	}
	if *tracingPaths || *tracingOnlyList != "" {
		otlp := startCollector()
		for i, rate := range tracingRates {
			node := fmt.Sprintf("mesh/bench/virtualNode/server-trace-%d", i)
			pT := freePort()
			xds.set(node, resources("ingress", pT, "cds_ingress_bench_server_http_9080", app, true))
			procT := b.startProxy(b.weft, node, xds.addr, append([]string{"--tracing", "otlp-grpc", "--tracing-endpoint", otlp.addr, "--tracing-sample-rate", rate}, aArgs...)...)
			waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pT))
			targets = append(targets, target{tracingPathName(rate), fmt.Sprintf("http://127.0.0.1:%d/", pT), []*os.Process{procT}, nil})
		}
		defer func() { fmt.Printf("\nSpans received by the bench's OTLP collector: %d\n", otlp.count.Load()) }()
	}
	fmt.Print(machine(*weft))
	var run []target
	for _, t := range targets {
		if t.url != "" && selected(t.name, *only, *skip) && keepPath(t.name) {
			run = append(run, t)
		}
	}
	for _, t := range run {
		if isH2C(t.name) {
			constantRateH2C(t.url, 500, 2*time.Second, 8, *h2cConns, t.tls)
			continue
		}
		warm(t.url, t.tls)
	}
	// The fixed-rate load is interleaved: each path gets -rounds slices
	// of -duration/-rounds, in turn, and its latencies are pooled over
	// its slices. Every path thus samples the same stretch of the
	// machine's noise, which a p99 difference of a fraction of a
	// millisecond needs on a 2-core machine shared with the load
	// generator and the app.
	type acc struct {
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
	accs := make([]acc, len(run))
	slice := *dur / time.Duration(*rounds)
	var profDone chan struct{}
	steal0, fixedStart, gcs0 := stealTicks(), time.Now(), ownNumGC()
	for round := 0; round < *rounds; round++ {
		for i, t := range run {
			if *profile != "" && t.name == *profPath && profDone == nil {
				profDone = make(chan struct{})
				go func() { // fetches the profile; ends with the HTTP call
					defer close(profDone)
					resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.admin[t.procs[0].Pid], max(1, int(slice.Seconds())-1)))
					if err != nil {
						log.Printf("profile: %v", err)
						return
					}
					defer resp.Body.Close()
					f, _ := os.Create(*profile)
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
				lat, errs, wall, dialed = constantRateH2C(t.url, *rate, slice, *conns, *h2cConns, t.tls)
				if dialed != int64(*h2cConns) {
					fmt.Printf("%s: the generator opened %d connections, not %d\n", t.name, dialed, *h2cConns)
				}
			} else {
				lat, errs, wall = constantRate(t.url, *rate, slice, *conns, t.tls)
			}
			accs[i].cpu += cpuTime(t.procs) - cpu0
			if t.name != "app direct" && t.name != "app direct"+h2cSuffix {
				accs[i].sched = accs[i].sched.add(schedOf(pidsOf(t.procs)).sub(sch0))
			}
			accs[i].gen = accs[i].gen.add(schedOf([]int{os.Getpid()}).sub(gen0))
			accs[i].app = accs[i].app.add(schedOf([]int{b.appPid}).sub(app0))
			if round == *rounds-1 {
				// Memory as the path's last slice leaves it, before any
				// other request to the proxy (other paths' slices leave it
				// idle, and its pages are released after a while).
				accs[i].mem = memKB(t.procs)
				if *memBreak && !strings.HasPrefix(t.name, "app direct") {
					accs[i].memRow = memRow(t.name, t.procs, accs[i].mem, b.admin)
				}
			}
			accs[i].gcs += b.numGC(t.procs, b.pprof) - gc0
			accs[i].lat = append(accs[i].lat, lat...)
			accs[i].slices = append(accs[i].slices, runSlice{t0, time.Second / time.Duration(*rate), lat})
			accs[i].errors += errs
			accs[i].wall += wall
			if profDone != nil {
				<-profDone
			}
		}
	}
	fixedLoad := loadavg()
	fixedSteal := fmt.Sprintf("%.1f ms per second; the generator's GC cycles: %d", float64(stealTicks()-steal0)*10/time.Since(fixedStart).Seconds(), ownNumGC()-gcs0)
	// The tail (tail.go): before summarize sorts the pooled latencies.
	var tailNames []string
	var tailRuns [][]runSlice
	var tailGCs [][]window
	var directSlices []runSlice
	for i, t := range run {
		if t.name == "app direct" {
			directSlices = accs[i].slices
		}
	}
	for i, t := range run {
		tailNames = append(tailNames, t.name)
		tailRuns = append(tailRuns, accs[i].slices)
		var ws []window
		if _, weft := b.admin[t.procs[0].Pid]; weft && b.pprof {
			ws = gcWindows(b.proxyPauseEnds(t.procs), gcWindowBefore, gcWindowAfter)
		}
		tailGCs = append(tailGCs, ws)
	}
	firstN = *conns
	ownGC := gcWindows(ownPauseEnds(), gcWindowBefore, gcWindowAfter)
	var tails []tailRow
	for i, t := range run {
		d := directSlices
		if isH2C(t.name) || t.name == "app direct" {
			d = nil // h2c's direct path is another row; the direct row has no added column
		}
		tr := tailTable(tailNames[i:i+1], tailRuns[i:i+1], d, tailGCs[i:i+1], ownGC)[0]
		tr.sched, tr.gen, tr.app, tr.requests = accs[i].sched, accs[i].gen, accs[i].app, len(accs[i].lat)
		tails = append(tails, tr)
	}
	type added struct {
		name     string
		p50, p99 float64
	}
	var fixed, sat, memRows []string
	var direct, directH2C result
	var adds []added
	type row struct {
		r    result
		perK float64
	}
	rows := map[string]row{}
	for i, t := range run {
		r := summarize(accs[i].lat, accs[i].errors, accs[i].wall)
		mem := accs[i].mem
		if accs[i].memRow != "" {
			memRows = append(memRows, accs[i].memRow)
			if _, weft := b.admin[t.procs[0].Pid]; weft && b.pprof {
				fmt.Printf("GC cycles of %s during its fixed-rate slices (%v, %.0f requests/s): %d\n", t.name, accs[i].wall.Round(time.Millisecond), r.achieved, accs[i].gcs)
			}
		}
		switch {
		case t.name == "app direct":
			direct = r
		case t.name == "app direct"+h2cSuffix:
			directH2C = r
		case isH2C(t.name) && directH2C.achieved > 0:
			adds = append(adds, added{t.name, r.p50 - directH2C.p50, r.p99 - directH2C.p99})
		case !isH2C(t.name) && direct.achieved > 0:
			adds = append(adds, added{t.name, r.p50 - direct.p50, r.p99 - direct.p99})
		}
		n := float64(len(t.procs))
		perK := accs[i].cpu.Seconds() / accs[i].wall.Seconds() / n / (r.achieved / 1000)
		rows[t.name] = row{r, perK}
		mb := func(kb int64) float64 { return float64(kb) / 1024 / n }
		fixed = append(fixed, fmt.Sprintf("| %s | %.0f | %.3f | %.3f | %.3f | %d | %.3f | %.1f | %.1f | %.1f |",
			t.name, r.achieved, r.p50, r.p99, r.max, r.errors, perK, mb(mem.rss), mb(mem.pss), mb(mem.private)))
	}
	var heyRows []string
	if _, err := exec.LookPath("hey"); err == nil && *heyDur > 0 {
		for _, t := range run {
			if t.tls != nil {
				heyRows = append(heyRows, fmt.Sprintf("| %s | n/a (needs a client certificate) | | |", t.name))
				continue
			}
			if isH2C(t.name) {
				continue // hey speaks HTTP/2 over TLS only
			}
			h := hey(t.url, *heyDur, *conns, *rate)
			heyRows = append(heyRows, fmt.Sprintf("| %s | %s | %s | %s |", t.name, h.rps, h.p50, h.p99))
		}
	}
	h2cSat := h2cSaturation(run, *satDur, *h2cSatConns, *h2cSatStreams)
	for _, t := range run {
		if isH2C(t.name) {
			continue // h2load, above
		}
		if t.tls != nil {
			sat = append(sat, fmt.Sprintf("| %s | n/a (wrk has no client certificate) | | | |", t.name))
			continue
		}
		s := wrk(t.url, *satDur, *satConns)
		sat = append(sat, fmt.Sprintf("| %s | %s | %s | %s | %s |", t.name, s.rps, s.p50, s.p99, loadavg()))
	}
	fmt.Printf("\nFixed rate %d requests/s for %v per path, in %d interleaved slices of %v, %d connections (latency in ms from the scheduled send time).\n", *rate, *dur, *rounds, slice, *conns)
	fmt.Printf("CPU and memory are the proxy's (each, for two); on the direct row the app's. Load average after the fixed-rate runs: %s; steal time during them (both vCPUs): %s.\n", fixedLoad, fixedSteal)
	if h2cWanted(*h2cOn || *h2tlsOn, *only) || h2tlsWanted(*h2tlsOn, *only) {
		fmt.Printf("On the h2c (and h2 mTLS) paths the %d senders share %d HTTP/2 connections (at most %d streams in flight per connection); added latency is against app direct h2c.\n", *conns, *h2cConns, (*conns+*h2cConns-1) / *h2cConns)
	}
	fmt.Println()
	fmt.Println("| path | achieved rps | p50 ms | p99 ms | max ms | errors | vCPU per 1,000 rps | RSS MB | PSS MB | private MB |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, l := range fixed {
		fmt.Println(l)
	}
	if len(memRows) > 0 {
		fmt.Printf("\nMemory at the end of each path's last fixed-rate slice, MB per proxy (file-backed: the executable's and shared libraries' pages and other mapped files; the Go columns from weft proxy's admin /memory, runtime/metrics, read after smaps; n/a for a build without it):\n\n")
		fmt.Println("| path | RSS | anonymous | file-backed | private | Go heap objects | Go heap free, not released | runtime, the rest (stacks, span slack, GC metadata), less released |")
		fmt.Println("|---|---|---|---|---|---|---|---|")
		for _, l := range memRows {
			fmt.Println(l)
		}
	}
	if len(adds) > 0 {
		fmt.Printf("\nAdded latency at %d requests/s (path minus app direct, same run):\n\n", *rate)
		fmt.Println("| path | added p50 ms | added p99 ms |")
		fmt.Println("|---|---|---|")
		for _, a := range adds {
			fmt.Printf("| %s | %.3f | %.3f |\n", a.name, a.p50, a.p99)
		}
	}
	for _, sfx := range []string{"", h2cSuffix, h2tlsSuffix} {
		if a, ok := rows["one weft proxy"+sfx]; ok {
			if b, ok := rows["one weft proxy B"+sfx]; ok {
				fmt.Printf("\nB / A (one weft proxy B%s over one weft proxy%s, same run): vCPU per 1,000 rps %.3f, p50 %.3f, p99 %.3f\n",
					sfx, sfx, b.perK/a.perK, b.r.p50/a.r.p50, b.r.p99/a.r.p99)
			}
		}
	}
	printTail("fixed-rate run", tails)
	printVersus(versusHAProxy(tailNames, tailRuns))
	if *paired > 0 {
		var pts []target
		var pnames []string
		for _, t := range run {
			if !isH2C(t.name) {
				pts = append(pts, t)
				pnames = append(pnames, t.name)
			}
		}
		pSteal0, pStart, pGCs0 := stealTicks(), time.Now(), ownNumGC()
		pruns := b.runPaired(pts, *rate, *paired, *rounds, *conns)
		pSteal := float64(stealTicks()-pSteal0) * 10 / time.Since(pStart).Seconds()
		pGCs := ownNumGC() - pGCs0
		var pdirect []runSlice
		for i, n := range pnames {
			if n == "app direct" {
				pdirect = pruns[i]
			}
		}
		fmt.Printf("\nPaired run: the %d HTTP/1.1 paths at once for %v, %d requests/s in total taking turns (request i to path i mod %d, %d connections per path), in %d parts; load average %s after, steal time %.1f ms per second, the generator's GC cycles %d:\n", len(pts), *paired, *rate, len(pts), *conns, *rounds, loadavg(), pSteal, pGCs)
		pown := gcWindows(ownPauseEnds(), gcWindowBefore, gcWindowAfter)
		var prows []tailRow
		for i, n := range pnames {
			d := pdirect
			if n == "app direct" {
				d = nil
			}
			prows = append(prows, tailTable(pnames[i:i+1], pruns[i:i+1], d, [][]window{nil}, pown)...)
		}
		printTail("paired run (a slice is a part)", prows)
		printVersus(versusHAProxy(pnames, pruns))
		printCoincidence(pnames, pruns, pdirect)
	}
	if *nSlowest > 0 {
		printSlowest(tailNames, tailRuns, tailGCs, ownGC, *nSlowest)
	}
	if len(heyRows) > 0 {
		fmt.Printf("\nCross-check with hey at the same rate, each path once: hey -z %v -c %d -q %d (its latencies count from each send, so a stall is not charged to the requests it delays):\n\n", *heyDur, *conns, *rate / *conns)
		fmt.Println("| path | requests/s | p50 ms | p99 ms |")
		fmt.Println("|---|---|---|---|")
		for _, l := range heyRows {
			fmt.Println(l)
		}
	}
	if len(sat) > 0 {
		fmt.Printf("\nSaturation: wrk -t2 -c%d -d%v --latency:\n\n", *satConns, *satDur)
		fmt.Println("| path | requests/s | p50 | p99 | load |")
		fmt.Println("|---|---|---|---|---|")
		for _, l := range sat {
			fmt.Println(l)
		}
	}
	printH2CSaturation(h2cSat, *satDur, *h2cSatConns, *h2cSatStreams)
	if *idleN > 0 {
		// Fresh processes, started now: the ones measured above keep
		// the heap and stacks the saturation runs grew, in which idle
		// connections would fit without a trace.
		type idleTarget struct {
			name  string
			url   string
			proc  *os.Process
			admin string      // weft proxy's admin address (with --pprof): its Go stack and heap
			tls   *tls.Config // mutual TLS into the proxy
			h2c   bool        // HTTP/2 without TLS (idleh2c.go)
		}
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
		addWeft("one weft proxy", b.weft, "mesh/bench/virtualNode/server-idle", false, aArgs...)
		if *weftB != "" {
			addWeft("one weft proxy B", *weftB, "mesh/bench/virtualNode/server-idle-b", false, bArgs...)
		}
		addWeft("one weft proxy, mTLS in", b.weft, "mesh/bench/virtualNode/server-idle-tls", true, aArgs...)
		if *weftB != "" {
			addWeft("one weft proxy B, mTLS in", *weftB, "mesh/bench/virtualNode/server-idle-tls-b", true, bArgs...)
		}
		pHI := freePort()
		procHI := b.startHAProxy(pHI, app)
		its = append(its, idleTarget{"haproxy", fmt.Sprintf("http://127.0.0.1:%d/", pHI), procHI, "", nil, false})
		pHIT := freePort()
		b.startHAProxyTLS(k, pHIT, app, true, false)
		procHIT := b.procs[len(b.procs)-1].Process
		its = append(its, idleTarget{"haproxy, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pHIT), procHIT, "", k.clientTLS(), false})
		if h2cWanted(*h2cOn, *only) {
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
			addH2C("one weft proxy"+h2cSuffix, b.weft, "mesh/bench/virtualNode/server-idle-h2c", aArgs...)
			if *weftB != "" {
				addH2C("one weft proxy B"+h2cSuffix, *weftB, "mesh/bench/virtualNode/server-idle-h2c-b", bArgs...)
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
		if *evloopBin != "" {
			pEI := freePort()
			procEI := b.startEvloop(*evloopBin, *evloopLoops, pEI, app)
			its = append(its, idleTarget{"evloop prototype", fmt.Sprintf("http://127.0.0.1:%d/", pEI), procEI, "", nil, false})
		}
		pRI := freePort()
		procRI := b.startRelay(pRI, app)
		its = append(its, idleTarget{"Go TCP relay", fmt.Sprintf("http://127.0.0.1:%d/", pRI), procRI, "", nil, false})
		// weft proxy releases its start-up pages 5 s after its
		// configuration settles (internal/proxy's pagesSettle): measured
		// before that, the release would hide the connections' cost.
		time.Sleep(8 * time.Second)
		fmt.Printf("\nIdle keep-alive connections: a freshly started proxy per path (one GET to warm it), then %d connections, one GET each, idle for %v; the proxy's memory before and with them open, each once its RSS held steady for a second:\n\n", *idleN, *idleSettle)
		// The anonymous column is the one a release of weft proxy's
		// executable pages (every minute, internal/proxy's pagesRefresh)
		// cannot move: a release between the two readings makes the RSS
		// column negative.
		fmt.Println("| path | connections | RSS before MB | RSS with them MB | KB per connection (RSS) | anonymous KB per connection | private KB per connection | Go stack / heap in use, KB per connection |")
		fmt.Println("|---|---|---|---|---|---|---|---|")
		for _, t := range its {
			if !selected(t.name, *only, *skip) {
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
			r, err := idleConns(t.url, t.tls, t.h2c, []*os.Process{t.proc}, *idleN, *idleSettle, func() {
				if t.admin != "" {
					goAfter = goMemOf(t.admin)
					if *idleProf != "" {
						fetch("http://"+t.admin+"/debug/pprof/heap", fmt.Sprintf("%s-%d.pb.gz", *idleProf, t.proc.Pid))
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
}
