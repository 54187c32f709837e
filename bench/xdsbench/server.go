package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"syscall"

	weftappmesh "github.com/weftmesh/weft/internal/appmesh"
	weftcloudmap "github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/server"
)

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

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer starts the child (serve) with its data under dir, passing
// on the profiles' flags, serverEnv added to this process's environment
// (none: the same environment), and returns it with its API and xDS
// addresses. The caller stops it.
func startServer(dir, cpuprofile, memprofile, traceFile string, serverEnv []string) (child *exec.Cmd, apiAddr, xdsAddr string, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	apiAddr, xdsAddr = freeAddr(), freeAddr()
	child = exec.Command(self, "serve", "-api", apiAddr, "-xds", xdsAddr, "-data", filepath.Join(dir, "data"), "-cpuprofile", cpuprofile, "-memprofile", memprofile, "-trace", traceFile)
	child.Stderr = os.Stderr
	if serverEnv != nil {
		child.Env = append(os.Environ(), serverEnv...)
	}
	if err := child.Start(); err != nil {
		return nil, "", "", err
	}
	return child, apiAddr, xdsAddr, nil
}
