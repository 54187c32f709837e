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
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
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
	client := flag.String("client", "weft", "the simulated proxies' client: \"weft\", grpc-go with weft proxy's flow control (a fixed window, xdsclient.WindowOptions, as Envoy keeps one), the headline; \"grpc\", grpc-go's default bandwidth-delay estimation, as proxyless gRPC apps dial, which sends the server a PING after each response received (one more read and PING-ACK write per push on the server); or \"lean\", without grpc-go, each proxy on an HTTP/2 connection of its own with fixed windows (lean.go), so that less of the two cores' time per push is the simulated proxies' (-streams-per-conn 1 only)")
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
	var leanTLS *tls.Config
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
		env, cfg, err := benchTLS(dir)
		if err != nil {
			cleanup()
			log.Fatal(err)
		}
		serverEnv = append(serverEnv, env...)
		creds, leanTLS = credentials.NewTLS(cfg), cfg
		log.Printf("xDS over TLS 1.3 (ECDSA P-256)")
	}
	fl := fleetOptions{dial: []grpc.DialOption{grpc.WithTransportCredentials(creds)}}
	switch *client {
	case "weft":
		fl.dial = append(fl.dial, xdsclient.WindowOptions()...)
		log.Printf("client: weft proxy's flow control (fixed windows)")
	case "grpc":
		log.Printf("client: grpc-go's default flow control (a PING per response received)")
	case "lean":
		if *perConn != 1 {
			cleanup()
			log.Fatalf("-client lean: one stream per connection (-streams-per-conn 1)")
		}
		fl.lean, fl.tls = true, leanTLS
		log.Printf("client: lean, without grpc-go (an HTTP/2 connection per proxy, fixed windows)")
	default:
		cleanup()
		log.Fatalf("-client %q: want weft, grpc or lean", *client)
	}
	err := run(ctx, *n, *replicas, *services, *writes, *perConn, *unique, *every, *cpuprofile, *memprofile, *traceFile, *settle, steps, serverEnv, fl)
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

// run starts the server as a child, makes the mesh through its API,
// connects the simulated proxies (steps of them at a time, n by the
// last) and measures the writes at each step.
func run(ctx context.Context, n, replicas, services, writes, perConn int, unique, every bool, cpuprofile, memprofile, traceFile string, settle bool, steps []int, serverEnv []string, fl fleetOptions) error {
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
	child, apiAddr, xdsAddr, err := startServer(dir, cpuprofile, memprofile, traceFile, serverEnv)
	if err != nil {
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

	f := newFleet(n, replicas, perConn, xdsAddr, fl)
	defer f.close()
	if len(steps) == 0 {
		steps = []int{n}
	}
	from := 0
	for _, to := range steps {
		connected, err := f.connect(ctx, from, to)
		if err != nil {
			return err
		}
		from = to
		if err := measure(ctx, child.Process.Pid, apiAddr, w, f.events, f.clients[:to], connected, nodes, services, writes, every, settle); err != nil {
			return err
		}
	}
	return nil
}
