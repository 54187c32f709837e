// Command xdsbench measures how fast weft's xDS server converges: the time
// from an App Mesh or Cloud Map API write to the ACK of every proxy the
// write affects, with N simulated proxies connected, and the server's CPU
// and memory meanwhile. It prints a markdown table row for
// docs/bench/xds.md.
//
// The server is weft's own assembly (internal/server.Run: API, store,
// xDS) in a child process, so that its CPU and RSS are its own; the
// proxies are Envoy-like ADS clients over real gRPC (with weft proxy's flow
// control, or grpc-go's default with -client grpc; wildcard CDS and LDS,
// then EDS and RDS for what those name, ACKing every response), each with
// its own stream, `-replicas` of them per virtual node. The mesh: `-services`
// virtual services, each a router splitting between two virtual nodes
// discovered through Cloud Map; each client node has two of them as
// backends, so a write to one service affects 2/services of the proxies
// (client nodes with the same two backends share their egress configuration,
// which the server builds once per write; -unique-egress gives each its own).
// Writes alternate between a route weight change (RDS) and a Cloud Map
// instance registered or deregistered (EDS), one at a time: each write's
// time runs from just before the API call to the last affected ACK.
//
//	go run ./bench/xdsbench -n 1000
//	go run ./bench/xdsbench -n 1000 -cpuprofile /tmp/xds.pprof   # the server's, during the writes
//	go run ./bench/xdsbench -n 10000 -steps 0,1000,10000 -writes 10  # the API's latency at 0, 1,000 and 10,000 proxies, one run
//	go run ./bench/xdsbench -n 1000 -memprofile /tmp/xds.mem     # its allocations during the writes:
//	go tool pprof -sample_index=alloc_space -base /tmp/xds.mem.base /tmp/xds.mem
//	# (the simulated proxies': -base /tmp/xds.mem.proxies.base /tmp/xds.mem.proxies)
//	go run ./bench/xdsbench -n 1000 -replicas 1 -unique-egress -every -tls  # the headline, xDS over TLS
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/appmesh"
	mesh "github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	weftappmesh "github.com/weftmesh/weft/internal/appmesh"
	weftcloudmap "github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/procstat"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/server"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor-serve" {
		if err := floorServe(os.Args[2:]); err != nil {
			log.Fatal(err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(os.Args[2:]); err != nil {
			log.Fatal(err)
		}
		return
	}
	n := flag.Int("n", 1000, "simulated proxies (ADS streams)")
	replicas := flag.Int("replicas", 2, "streams per virtual node")
	services := flag.Int("services", 10, "virtual services (routers); a write affects 2/services of the proxies")
	writes := flag.Int("writes", 100, "API writes, one at a time")
	perConn := flag.Int("streams-per-conn", 1, "ADS streams sharing one gRPC connection")
	cpuprofile := flag.String("cpuprofile", "", "write the server's CPU profile during the writes to this file")
	every := flag.Bool("every", false, "the headline shape: every client node uses service 0, and every write changes its route's weights (RDS), so every proxy is affected; with -replicas 1 -unique-egress, one identity per proxy, each translated on every write")
	unique := flag.Bool("unique-egress", false, "give each client node a backend of its own (a virtual service that does not exist), so that no two share a whole egress configuration: each identity is translated and gets an egress listener of its own (the backend of its own resolves to nothing, so the route tables, virtual hosts and clusters of the services nodes have in common are still shared)")
	memprofile := flag.String("memprofile", "", "write the server's heap profile to this file after the writes, and to this file.base before them; the simulated proxies' to this file.proxies and .proxies.base")
	settle := flag.Bool("settle", false, "before each write, wait until the server has counted an ACK from every proxy the writes so far affected (weft_xds_acks_total), so that the API call does not queue behind the previous write's tail: the ACKs, PINGs and window updates the server is still handling when the harness sees the last ACK sent; compare the API's latency with and without")
	traceFile := flag.String("trace", "", "write the server's execution trace (runtime/trace) during the writes to this file: what an API call waits for (go tool trace)")
	serverGOGC := flag.String("server-gogc", "", "run the server with this GOGC (and -server-gomemlimit with this GOMEMLIMIT), leaving the simulated proxies' own at Go's default; empty: the environment's")
	serverMemLimit := flag.String("server-gomemlimit", "", "run the server with this GOMEMLIMIT (e.g. 400MiB)")
	proxiesGOGC := flag.Int("proxies-gogc", 0, "the simulated proxies' GOGC (this process's; the server's stays the environment's or -server-gogc): their thousands of streams share one heap, so they collect together, where real proxies, each on its own host, collect apart; 0 keeps the environment's; not with -floor")
	stepsFlag := flag.String("steps", "", "comma-separated proxy counts, ascending, the last -n or less (e.g. 0,1000,10000): in one run, connect that many proxies in turn and make the writes at each, one table row per step, so the API's latency can be compared across fan-outs")
	client := flag.String("client", "weft", "the simulated proxies' HTTP/2 flow control: \"weft\", weft proxy's own (a fixed window, xdsclient.WindowOptions, as Envoy keeps one), the headline; or \"grpc\", grpc-go's default bandwidth-delay estimation, as proxyless gRPC apps dial, which sends the server a PING after each response received (one more read and PING-ACK write per push on the server)")
	floorN := flag.Int("floor", 0, "instead of the mesh: the floor of a push, N loopback TCP connections to a child that writes -floor-msg bytes to each and reads -floor-ack bytes back per round, plain Go net (floor.go)")
	floorMsg := flag.Int("floor-msg", 600, "with -floor: the pushed message's size in bytes")
	floorAck := flag.Int("floor-ack", 200, "with -floor: the reply's size in bytes")
	floorRounds := flag.Int("floor-rounds", 30, "with -floor: rounds measured")
	window := flag.Int("max-pushes-in-flight", 0, "the server's push window (weft server --xds-max-pushes-in-flight): 0, weft's default; -1, no window (every push of a write sent at once, as before round 14)")
	withTLS := flag.Bool("tls", false, "serve xDS over TLS (weft server --xds-tls-cert and --xds-tls-key, a self-signed ECDSA P-256 certificate), as a control plane reached from other hosts is; the default is plaintext gRPC")
	flag.Parse()
	if *memprofile != "" {
		runtime.MemProfileRate = 4096 // as serve's
		proxiesProfile = *memprofile
	}
	setProxiesGOGC(*proxiesGOGC, *floorN, debug.SetGCPercent)
	if *floorN > 0 {
		if err := floor(*floorN, *floorMsg, *floorAck, *floorRounds); err != nil {
			log.Fatal(err)
		}
		return
	}
	var steps []int
	if *stepsFlag != "" {
		for _, f := range strings.Split(*stepsFlag, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || v < 0 || v > *n || len(steps) > 0 && v < steps[len(steps)-1] {
				log.Fatalf("-steps %q: want ascending counts from 0 to -n (%d)", *stepsFlag, *n)
			}
			steps = append(steps, v)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var serverEnv []string
	if *serverGOGC != "" {
		serverEnv = append(serverEnv, "GOGC="+*serverGOGC)
	}
	if *serverMemLimit != "" {
		serverEnv = append(serverEnv, "GOMEMLIMIT="+*serverMemLimit)
	}
	if *window != 0 {
		serverEnv = append(serverEnv, fmt.Sprintf("%s=%d", windowEnv, *window))
	}
	creds := insecure.NewCredentials()
	cleanup := func() {}
	// Only -tls gives the server a certificate, not the environment.
	os.Unsetenv(tlsCertEnv)
	os.Unsetenv(tlsKeyEnv)
	if *withTLS {
		dir, err := os.MkdirTemp("", "xdsbench-tls")
		if err != nil {
			log.Fatal(err)
		}
		cleanup = func() { os.RemoveAll(dir) }
		env, c, err := benchTLS(dir)
		if err != nil {
			cleanup()
			log.Fatal(err)
		}
		serverEnv = append(serverEnv, env...)
		creds = c
		log.Printf("xDS over TLS 1.3 (ECDSA P-256)")
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	switch *client {
	case "weft":
		dial = append(dial, xdsclient.WindowOptions()...)
		log.Printf("client: weft proxy's flow control (fixed windows)")
	case "grpc":
		log.Printf("client: grpc-go's default flow control (a PING per response received)")
	default:
		cleanup()
		log.Fatalf("-client %q: want weft or grpc", *client)
	}
	err := run(ctx, *n, *replicas, *services, *writes, *perConn, *unique, *every, *cpuprofile, *memprofile, *traceFile, *settle, steps, serverEnv, dial)
	cleanup()
	if err != nil {
		log.Fatal(err)
	}
}

// setProxiesGOGC applies -proxies-gogc (0: keep the environment's) to
// this process, the simulated proxies', through set (debug.SetGCPercent).
// Not with -floor (floorN > 0): that is a plain-Go baseline, with no
// simulated proxies, measured at Go's own settings.
func setProxiesGOGC(gogc, floorN int, set func(int) int) {
	switch {
	case gogc == 0:
	case floorN > 0:
		log.Printf("-proxies-gogc %d ignored: -floor runs no simulated proxies", gogc)
	default:
		set(gogc)
		log.Printf("the simulated proxies' GOGC: %d", gogc)
	}
}

// each prints every write's time as it ends, with the API call's: set
// against GODEBUG=gctrace=1's lines (the server's and this process's),
// it shows which writes a collection overlapped (docs/bench/xds.md,
// round 17).
var each = flag.Bool("each", false, "log each write's time (write -> last ACK) and its API call's as the write ends")

// windowEnv passes -max-pushes-in-flight to the child.
const windowEnv = "XDSBENCH_MAX_PUSHES_IN_FLIGHT"

// benchQuotas are the server's quotas: the defaults, but where the
// simulated fleet passes them. Cloud Map: up to three instances of each
// of -services services, all in one namespace, with no limit there (0),
// so that the writes measured do not count the namespace's services and
// instances for a quota (TestBenchQuotas).
func benchQuotas() (*weftappmesh.Limits, *weftcloudmap.Limits, error) {
	mesh, err := weftappmesh.ParseLimits("virtualNodesPerMesh=100000,virtualServicesPerMesh=1000,virtualRoutersPerMesh=1000", weftappmesh.DefaultLimits())
	if err != nil {
		return nil, nil, err
	}
	cm, err := weftcloudmap.ParseLimits("instancesPerNamespace=0,servicesPerNamespace=0", weftcloudmap.DefaultLimits())
	if err != nil {
		return nil, nil, err
	}
	return &mesh, &cm, nil
}

// serve is the child: weft's server with a CPU profile that SIGUSR1
// starts and SIGUSR2 stops, and heap profiles written at both.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var cfg server.Config
	fs.StringVar(&cfg.APIAddr, "api", "", "")
	fs.StringVar(&cfg.DataDir, "data", "", "")
	fs.StringVar(&cfg.XDSAddr, "xds", "", "")
	profile := fs.String("cpuprofile", "", "")
	memprofile := fs.String("memprofile", "", "")
	traceFile := fs.String("trace", "", "")
	fs.Parse(args)
	if *memprofile != "" {
		// One sample per 4 KB, not 512: a write allocates about a
		// megabyte, too few samples to tell its callers apart.
		runtime.MemProfileRate = 4096
	}
	cfg.Region, cfg.AccountID = "us-east-1", "111122223333"
	cfg.XDSTLSCert, cfg.XDSTLSKey = os.Getenv(tlsCertEnv), os.Getenv(tlsKeyEnv)
	var err error
	if cfg.Limits, cfg.CloudMapLimits, err = benchQuotas(); err != nil {
		return err
	}
	// The simulated fleet may pass weft server's default stream limits
	// (-n over 20,000, -streams-per-conn over 100): the bench measures
	// convergence, not the limits.
	cfg.XDS.MaxStreams, cfg.XDS.MaxStreamsPerConn = 1<<30, 1<<20
	if v := os.Getenv(windowEnv); v != "" {
		if cfg.XDS.MaxPushesInFlight, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("%s: %w", windowEnv, err)
		}
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() { // ends with the process
		var f, tf *os.File
		heap := func(name string) {
			if *memprofile != "" {
				writeAllocs(name)
			}
		}
		for s := range sig {
			switch s {
			case syscall.SIGUSR1:
				heap(*memprofile + ".base")
			case syscall.SIGUSR2:
				heap(*memprofile)
			}
			switch {
			case s == syscall.SIGUSR1 && *traceFile != "" && tf == nil:
				tf, _ = os.Create(*traceFile)
				trace.Start(tf)
			case s == syscall.SIGUSR2 && tf != nil:
				trace.Stop()
				tf.Close()
				tf = nil
			}
			switch {
			case s == syscall.SIGUSR1 && *profile != "" && f == nil:
				f, _ = os.Create(*profile)
				pprof.StartCPUProfile(f)
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
			}
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// signalProfile sends the server sig, which makes it write its profile
// to -memprofile's name with suffix, and with -memprofile waits until the
// whole profile is written (writeAllocs renames it into place), at most
// 10 seconds: its forced collection and its writing fall outside the
// figures measured after.
func signalProfile(ctx context.Context, pid int, sig syscall.Signal, suffix string) {
	if proxiesProfile != "" {
		os.Remove(proxiesProfile + suffix)
	}
	syscall.Kill(pid, sig)
	if proxiesProfile == "" {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(proxiesProfile + suffix); err == nil {
			return
		}
	}
}

// proxiesProfile is -memprofile, for selfHeap.
var proxiesProfile string

// selfHeap writes the simulated proxies' allocation profile to
// -memprofile's name with suffix, if it is set.
func selfHeap(suffix string) {
	if proxiesProfile == "" {
		return
	}
	writeAllocs(proxiesProfile + suffix)
}

// writeAllocs collects, then writes this process's allocation profile to
// name (the profile is as of the last collection), through a temporary
// file renamed when complete: awaitServerProfile waits for name.
func writeAllocs(name string) {
	runtime.GC()
	f, err := os.Create(name + ".tmp")
	if err != nil {
		return
	}
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	if cerr := f.Close(); err == nil && cerr == nil {
		os.Rename(name+".tmp", name)
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func run(ctx context.Context, n, replicas, services, writes, perConn int, unique, every bool, cpuprofile, memprofile, traceFile string, settle bool, steps []int, serverEnv []string, dial []grpc.DialOption) error {
	if every && services < 2 {
		return fmt.Errorf("-every needs -services 2 or more")
	}
	if writes < 1 || n < 1 || replicas < 1 || perConn < 1 || services < 1 {
		return fmt.Errorf("-n, -replicas, -services, -writes and -streams-per-conn must be 1 or more")
	}
	dir, err := os.MkdirTemp("", "xdsbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	apiAddr, xdsAddr := freeAddr(), freeAddr()
	child := exec.Command(self, "serve", "-api", apiAddr, "-xds", xdsAddr, "-data", filepath.Join(dir, "data"), "-cpuprofile", cpuprofile, "-memprofile", memprofile, "-trace", traceFile)
	child.Stderr = os.Stderr
	if serverEnv != nil {
		child.Env = append(os.Environ(), serverEnv...)
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		child.Process.Signal(syscall.SIGTERM)
		child.Wait()
	}()

	api := newAPI("http://" + apiAddr)
	if err := waitAPI(ctx, api); err != nil {
		return err
	}
	nodes := (n + replicas - 1) / replicas
	start := time.Now()
	w, err := setup(ctx, api, nodes, services, unique, every)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	log.Printf("mesh created through the API in %v: %d client nodes, %d services", time.Since(start).Round(time.Millisecond), nodes, services)

	events := make(chan ackEvent, 1<<16)
	clients := make([]*client, n)
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var conn *grpc.ClientConn
	var connected time.Duration // the last connect's
	// connect opens the streams of clients[from:to] as a restarted server
	// sees them: everyone at once (64 dials in flight), and waits until
	// each has ACKed its first RDS (the last type).
	connect := func(from, to int) error {
		start := time.Now()
		var wg sync.WaitGroup
		var startErr atomic.Pointer[error]
		sem := make(chan struct{}, 64)
		for i := from; i < to; i++ {
			if i%perConn == 0 {
				c, err := grpc.NewClient(xdsAddr, dial...)
				if err != nil {
					return err
				}
				conn = c
				conns = append(conns, conn)
			}
			clients[i] = &client{id: i, node: i / replicas, events: events}
			sem <- struct{}{}
			// The connection of this client, read now: conn changes as the
			// loop goes on (read inside the goroutine, it put most
			// clients on whichever connection was newest when they ran).
			cc := conn
			wg.Go(func() { // ends when the stream is open
				defer func() { <-sem }()
				if err := clients[i].start(ctx, cc, fmt.Sprintf("mesh/bench/virtualNode/client-%d", i/replicas)); err != nil {
					err = fmt.Errorf("client %d: %w", i, err)
					startErr.CompareAndSwap(nil, &err)
				}
			})
		}
		wg.Wait()
		if err := startErr.Load(); err != nil {
			return *err
		}
		for ready := from; ready < to; {
			select {
			case e := <-events:
				if e.typ == rdsType && e.first {
					ready++
				}
			case <-time.After(60 * time.Second):
				return fmt.Errorf("only %d of %d clients configured after 60 s", ready, to)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		connected = time.Since(start)
		log.Printf("%d clients connected and configured in %v (%d in all, on %d gRPC connections)", to-from, connected.Round(time.Millisecond), to, len(conns))
		return nil
	}
	if len(steps) == 0 {
		steps = []int{n}
	}
	from := 0
	for _, to := range steps {
		if err := connect(from, to); err != nil {
			return err
		}
		from = to
		if err := measure(ctx, child.Process.Pid, apiAddr, w, events, clients[:to], connected, nodes, services, writes, every, settle); err != nil {
			return err
		}
	}
	return nil
}

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

// apiClients talk to weft's API as any AWS SDK program would.
type apiClients struct {
	mesh *appmesh.Client
	cm   *servicediscovery.Client
}

func newAPI(endpoint string) apiClients {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("weft", "weft", "")}
	return apiClients{
		mesh: appmesh.NewFromConfig(cfg, func(o *appmesh.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		cm:   servicediscovery.NewFromConfig(cfg, func(o *servicediscovery.Options) { o.BaseEndpoint = aws.String(endpoint) }),
	}
}

func waitAPI(ctx context.Context, api apiClients) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := api.mesh.ListMeshes(ctx, &appmesh.ListMeshesInput{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server API not up: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // startup of the child; not part of any measurement
	}
}

// world is the mesh the writes change.
type world struct {
	api        apiClients
	serviceIDs []string // Cloud Map service of each target pair
	extra      []bool   // whether target pair k has its extra instance
	weights    []int    // the weight of router k's first target (setWeights)
}

const meshName = "bench"

func setup(ctx context.Context, api apiClients, nodes, services int, unique, every bool) (*world, error) {
	w := &world{api: api, extra: make([]bool, services), weights: slices.Repeat([]int{50}, services)}
	ns, err := api.cm.CreateHttpNamespace(ctx, &servicediscovery.CreateHttpNamespaceInput{Name: aws.String("bench.local")})
	if err != nil {
		return nil, err
	}
	var nsID string
	for nsID == "" {
		op, err := api.cm.GetOperation(ctx, &servicediscovery.GetOperationInput{OperationId: ns.OperationId})
		if err != nil {
			return nil, err
		}
		switch op.Operation.Status {
		case sd.OperationStatusSuccess:
			nsID = op.Operation.Targets[string(sd.OperationTargetTypeNamespace)]
		case sd.OperationStatusFail:
			return nil, errors.New(aws.ToString(op.Operation.ErrorMessage))
		default:
			time.Sleep(10 * time.Millisecond) // setup only
		}
	}
	if _, err := api.mesh.CreateMesh(ctx, &appmesh.CreateMeshInput{MeshName: aws.String(meshName),
		Spec: &mesh.MeshSpec{EgressFilter: &mesh.EgressFilter{Type: mesh.EgressFilterTypeDropAll}}}); err != nil {
		return nil, err
	}
	listener := []mesh.Listener{{PortMapping: &mesh.PortMapping{Port: aws.Int32(8080), Protocol: mesh.PortProtocolHttp}}}
	for k := range services {
		svc, err := api.cm.CreateService(ctx, &servicediscovery.CreateServiceInput{Name: aws.String(fmt.Sprintf("tgt-%d", k)), NamespaceId: aws.String(nsID)})
		if err != nil {
			return nil, err
		}
		w.serviceIDs = append(w.serviceIDs, aws.ToString(svc.Service.Id))
		for _, v := range []string{"a", "b"} {
			if _, err := api.mesh.CreateVirtualNode(ctx, &appmesh.CreateVirtualNodeInput{MeshName: aws.String(meshName),
				VirtualNodeName: aws.String(fmt.Sprintf("tgt-%d-%s", k, v)),
				Spec: &mesh.VirtualNodeSpec{Listeners: listener, ServiceDiscovery: &mesh.ServiceDiscoveryMemberAwsCloudMap{Value: mesh.AwsCloudMapServiceDiscovery{
					NamespaceName: aws.String("bench.local"), ServiceName: aws.String(fmt.Sprintf("tgt-%d", k)),
					Attributes: []mesh.AwsCloudMapInstanceAttribute{{Key: aws.String("version"), Value: aws.String(v)}},
				}}}}); err != nil {
				return nil, err
			}
			if err := w.register(ctx, k, v, v+"-1"); err != nil {
				return nil, err
			}
		}
		if _, err := api.mesh.CreateVirtualRouter(ctx, &appmesh.CreateVirtualRouterInput{MeshName: aws.String(meshName),
			VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k)),
			Spec:              &mesh.VirtualRouterSpec{Listeners: []mesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}}); err != nil {
			return nil, err
		}
		if _, err := api.mesh.CreateRoute(ctx, &appmesh.CreateRouteInput{MeshName: aws.String(meshName),
			VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k)), RouteName: aws.String("split"), Spec: routeSpec(k, 50, 50)}); err != nil {
			return nil, err
		}
		if _, err := api.mesh.CreateVirtualService(ctx, &appmesh.CreateVirtualServiceInput{MeshName: aws.String(meshName),
			VirtualServiceName: aws.String(fmt.Sprintf("svc-%d.bench.local", k)),
			Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProviderMemberVirtualRouter{Value: mesh.VirtualRouterServiceProvider{
				VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k))}}}}); err != nil {
			return nil, err
		}
	}
	// Client nodes, created concurrently: the API serialises nothing but
	// the store's group commit.
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	sem := make(chan struct{}, 32)
	for j := range nodes {
		sem <- struct{}{}
		wg.Go(func() { // ends when the call returns
			defer func() { <-sem }()
			a, b := j%services, (j+1)%services
			if every {
				a, b = 0, 1+j%(services-1) // service 0 for all
			}
			backends := []mesh.Backend{
				&mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(fmt.Sprintf("svc-%d.bench.local", a))}},
				&mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(fmt.Sprintf("svc-%d.bench.local", b))}},
			}
			if unique {
				backends = append(backends, &mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(fmt.Sprintf("own-%d.bench.local", j))}})
			}
			_, err := api.mesh.CreateVirtualNode(ctx, &appmesh.CreateVirtualNodeInput{MeshName: aws.String(meshName),
				VirtualNodeName: aws.String(fmt.Sprintf("client-%d", j)),
				Spec: &mesh.VirtualNodeSpec{Listeners: listener,
					ServiceDiscovery: &mesh.ServiceDiscoveryMemberDns{Value: mesh.DnsServiceDiscovery{Hostname: aws.String(fmt.Sprintf("client-%d.bench.local", j))}},
					Backends:         backends}})
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		return nil, *err
	}
	return w, nil
}

func routeSpec(k, a, b int) *mesh.RouteSpec {
	return &mesh.RouteSpec{HttpRoute: &mesh.HttpRoute{
		Match: &mesh.HttpRouteMatch{Prefix: aws.String("/")},
		Action: &mesh.HttpRouteAction{WeightedTargets: []mesh.WeightedTarget{
			{VirtualNode: aws.String(fmt.Sprintf("tgt-%d-a", k)), Weight: int32(a)},
			{VirtualNode: aws.String(fmt.Sprintf("tgt-%d-b", k)), Weight: int32(b)},
		}},
	}}
}

func (w *world) setWeights(ctx context.Context, k, a, b int) error {
	_, err := w.api.mesh.UpdateRoute(ctx, &appmesh.UpdateRouteInput{MeshName: aws.String(meshName),
		VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k)), RouteName: aws.String("split"), Spec: routeSpec(k, a, b)})
	if err == nil {
		w.weights[k] = a
	}
	return err
}

// hostNumber gives every instance of a target pair its own address: two
// instances on one address are one endpoint, and a write would change
// nothing.
func hostNumber(version, id string) int {
	switch version + "/" + id {
	case "a/a-1":
		return 1
	case "b/b-1":
		return 2
	}
	return 3
}

func (w *world) register(ctx context.Context, k int, version, id string) error {
	_, err := w.api.cm.RegisterInstance(ctx, &servicediscovery.RegisterInstanceInput{ServiceId: aws.String(w.serviceIDs[k]), InstanceId: aws.String(id),
		Attributes: map[string]string{"AWS_INSTANCE_IPV4": fmt.Sprintf("10.%d.%d.%d", k/250, k%250, hostNumber(version, id)), "version": version}})
	return err
}

// toggleInstance registers or deregisters a second instance of target
// pair k's "a" node.
func (w *world) toggleInstance(ctx context.Context, k int) error {
	w.extra[k] = !w.extra[k]
	if w.extra[k] {
		return w.register(ctx, k, "a", "a-2")
	}
	_, err := w.api.cm.DeregisterInstance(ctx, &servicediscovery.DeregisterInstanceInput{ServiceId: aws.String(w.serviceIDs[k]), InstanceId: aws.String("a-2")})
	return err
}

const (
	cdsType = resource.ClusterType
	edsType = resource.EndpointType
	ldsType = resource.ListenerType
	rdsType = resource.RouteType
)

// ackEvent is one ACK a client sent.
type ackEvent struct {
	client  int
	typ     string
	version string
	first   bool // the first response of the type on the stream
	at      time.Time
}

// client is an Envoy-like ADS client: wildcard CDS and LDS, EDS for the
// EDS clusters, RDS for the route tables the listeners name.
type client struct {
	id, node int
	events   chan<- ackEvent
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient

	mu       sync.Mutex // protects versions, read by the coordinator
	versions map[string]string

	// Owned by the receive goroutine.
	nonces map[string]string
	names  map[string][]string
}

func (c *client) version(typ string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions[typ]
}

func (c *client) start(ctx context.Context, conn *grpc.ClientConn, nodeID string) error {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	c.stream, c.versions, c.nonces, c.names = s, map[string]string{}, map[string]string{}, map[string][]string{}
	node := &core.Node{Id: nodeID, Cluster: nodeID, UserAgentName: "envoy"}
	if err := s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: cdsType}); err != nil {
		return err
	}
	if err := s.Send(&discovery.DiscoveryRequest{TypeUrl: ldsType}); err != nil {
		return err
	}
	go c.receive() // ends when the stream does (ctx or the server)
	return nil
}

func (c *client) request(typ string) error {
	c.mu.Lock()
	v := c.versions[typ]
	c.mu.Unlock()
	return c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: v, ResponseNonce: c.nonces[typ], ResourceNames: c.names[typ]})
}

func (c *client) receive() {
	for {
		r, err := c.stream.Recv()
		if err != nil {
			return
		}
		typ := r.GetTypeUrl()
		c.mu.Lock()
		first := c.versions[typ] == ""
		c.versions[typ] = r.GetVersionInfo()
		c.mu.Unlock()
		c.nonces[typ] = r.GetNonce()
		var follow string // the type whose subscription this response changes
		var names []string
		switch typ {
		case cdsType:
			follow = edsType
			for _, a := range r.GetResources() {
				var cl clusterv3.Cluster
				if a.UnmarshalTo(&cl) == nil && cl.GetType() == clusterv3.Cluster_EDS {
					names = append(names, cl.GetName())
				}
			}
		case ldsType:
			follow = rdsType
			for _, a := range r.GetResources() {
				var l listenerv3.Listener
				if a.UnmarshalTo(&l) != nil {
					continue
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						var hcm hcmv3.HttpConnectionManager
						if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds() != nil {
							names = append(names, hcm.GetRds().GetRouteConfigName())
						}
					}
				}
			}
		}
		if err := c.request(typ); err != nil {
			return
		}
		c.events <- ackEvent{client: c.id, typ: typ, version: r.GetVersionInfo(), first: first, at: time.Now()}
		if follow != "" {
			slices.Sort(names)
			names = slices.Compact(names)
			if !slices.Equal(names, c.names[follow]) {
				c.names[follow] = names
				if err := c.request(follow); err != nil {
					return
				}
			}
		}
	}
}
