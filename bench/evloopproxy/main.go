// Command evloopproxy runs the event-loop prototype of weft proxy's
// plaintext HTTP/1.1 path (internal/proxy/evloop) with a static
// configuration, so that bench/proxybench can measure it next to weft
// proxy, haproxy and the Go TCP relay (-evloop).
//
//	go build -o /tmp/evloopproxy ./bench/evloopproxy
//	/tmp/evloopproxy -listen 127.0.0.1:15001 -route '*/=app=127.0.0.1:9080'
//
// Each -route is DOMAIN/PREFIX=CLUSTER=ENDPOINT[,ENDPOINT...]: requests
// whose Host matches DOMAIN ("*", a host, or "*.suffix") and whose path
// starts with /PREFIX go to the cluster's endpoints, round robin.
//
// With -weft-routes the same routes are compiled into weft's route
// configuration (a virtual host per domain, a prefix route each) and
// matched as weft proxy matches them (route.Config.MatchHead), through
// the loops' Router interface: the cost of weft's routing on the loops.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

type routes []string

func (r *routes) String() string     { return strings.Join(*r, " ") }
func (r *routes) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "evloopproxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("evloopproxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:15001", "listener address")
	loops := fs.Int("loops", 0, "event loops (0: GOMAXPROCS)")
	lockThreads := fs.Bool("lock-threads", false, "block each loop's locked OS thread in epoll_wait between events (default: park the loop's goroutine in Go's netpoller)")
	rawWait := fs.Bool("raw-wait", false, "wait in epoll_wait as a raw system call, the scheduler never told (sets GOMAXPROCS to the loops + 1)")
	weftRoutes := fs.Bool("weft-routes", false, "route with weft's compiled route configuration (route.Config.MatchHead) through the loops' Router, instead of the prototype's own table")
	admin := fs.String("admin", "", "serve the stats as text on this loopback address (/stats); empty: off")
	var rs routes
	fs.Var(&rs, "route", "DOMAIN/PREFIX=CLUSTER=ENDPOINT[,ENDPOINT...] (repeatable, matched in order)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := evloop.Config{Listen: *listen, Loops: *loops, LockThreads: *lockThreads, RawWait: *rawWait, Clusters: map[string][]string{}, Stats: stats.NewStore(), Log: log}
	for _, r := range rs {
		match, rest, ok := strings.Cut(r, "=")
		name, eps, ok2 := strings.Cut(rest, "=")
		slash := strings.IndexByte(match, '/')
		if !ok || !ok2 || slash < 0 {
			return fmt.Errorf("route %q: want DOMAIN/PREFIX=CLUSTER=ENDPOINT[,ENDPOINT...]", r)
		}
		cfg.Routes = append(cfg.Routes, evloop.Route{Domain: match[:slash], Prefix: match[slash:], Cluster: name})
		cfg.Clusters[name] = append(cfg.Clusters[name], strings.Split(eps, ",")...)
	}
	if *weftRoutes {
		r, err := weftRouter(cfg.Routes, cfg.Clusters)
		if err != nil {
			return err
		}
		cfg.Router, cfg.Routes, cfg.Clusters = r, nil, nil
	}
	if *rawWait {
		n := *loops
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
			cfg.Loops = n
		}
		runtime.GOMAXPROCS(n + 1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := evloop.Listen(cfg)
	if err != nil {
		return err
	}
	if *admin != "" {
		// The stats carry no credentials: loopback only.
		if ap, err := netip.ParseAddrPort(*admin); err != nil || !ap.Addr().IsLoopback() {
			return fmt.Errorf("-admin %q: want a loopback ip:port", *admin)
		}
		ln, err := net.Listen("tcp", *admin)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
			_ = cfg.Stats.WriteText(w, nil, false)
		})
		hs := &http.Server{Handler: mux}
		go func() { _ = hs.Serve(ln) }() // the admin listener; ends when Close below closes it
		defer hs.Close()
	}
	fmt.Fprintf(os.Stderr, "evloopproxy: listening on %s\n", srv.Addr())
	return srv.Serve(ctx)
}

// weftRouter compiles the routes into a RouteConfiguration, a virtual
// host per domain in the order they first appear.
func weftRouter(rs []evloop.Route, clusters map[string][]string) (*evloop.ConfigRouter, error) {
	rc := &routev3.RouteConfiguration{Name: "evloopproxy"}
	vhs := map[string]*routev3.VirtualHost{}
	for _, r := range rs {
		vh := vhs[r.Domain]
		if vh == nil {
			vh = &routev3.VirtualHost{Name: r.Domain, Domains: []string{r.Domain}}
			vhs[r.Domain] = vh
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}
		vh.Routes = append(vh.Routes, &routev3.Route{Name: r.Cluster,
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: r.Prefix}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.Cluster}}}})
	}
	c, err := route.Compile(rc)
	if err != nil {
		return nil, err
	}
	hosts := map[string][]netip.AddrPort{}
	for name, eps := range clusters {
		for _, e := range eps {
			ap, err := netip.ParseAddrPort(e)
			if err != nil {
				return nil, fmt.Errorf("cluster %q: endpoint %q: %w", name, e, err)
			}
			hosts[name] = append(hosts[name], ap)
		}
	}
	return &evloop.ConfigRouter{Routes: c, Hosts: hosts}, nil
}
