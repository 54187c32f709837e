//go:build linux

package main

// -appmesh: the request as App Mesh configures it. weft server (the -weft
// build, its embedded store in the bench's temporary directory, on this
// machine's loopback) is given, through the App Mesh API and the AWS SDK, a
// mesh as the tutorial builds it: virtual nodes client and server, the
// server's listener on the app's port, a virtual router and route, the
// virtual service server.bench.local they provide, and the client's backend
// that service. Each task is a network namespace on the bench's bridge
// (internal/netns), with the interception ECS sets up for an APPMESH
// proxyConfiguration, installed by `weft intercept`; its sidecar is `weft
// proxy` as UID 1337, identified by APPMESH_RESOURCE_ARN, configured by weft
// server over xDS. The load generator is the client task's app: this
// process, its sockets opened inside the client's namespace as root (not
// the ignored UID), to server.bench.local:8080 at the server task's
// address: the client's iptables hand the connection to its sidecar's
// egress listener (15001), which sends it to the server task, whose
// iptables hand it to the server sidecar's ingress listener (15000), which
// sends it to the app on 127.0.0.1:8080.
//
// In the same run, interleaved: the app reached directly (a second app
// process on 8081, which the client's interception leaves alone), and two
// haproxies configured by hand (the two-haproxy shape of the other paths)
// as the sidecars of two more tasks with the same interception, on the
// same bridge: the same path, the same iptables, another proxy. With
// -weft-b, the same two tasks again in namespaces of their own with
// sidecars and weft server of that build (-weft-b).

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftmesh/weft/internal/intercept"
	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/weftbin"
)

// The -appmesh layout's names, ports and addresses.
const (
	mbFamily     = "wfmb" // the lab family: every namespace and link starts wfmb<pid>
	mbRegion     = "us-east-1"
	mbAccount    = "111122223333"
	mbService    = "server.bench.local"
	mbAppPort    = 8080  // the server virtual node's listener: the app's port
	mbDirectPort = 8081  // the same app, a second process, outside the interception
	mbXDSPort    = 15128 // in every namespace, forwarded to weft server's xDS
	mbAdmin      = "127.0.0.1:9901"
)

var mbSubnet = netip.MustParsePrefix("10.251.150.0/24")

func mbAddr(last byte) netip.Addr {
	a := mbSubnet.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

// task is one ECS task: a namespace with its sidecar.
type task struct {
	host  *netns.Host
	proxy *os.Process
	log   string // the sidecar's output (its log lines, its access log)
}

// sidecars is one build's two tasks.
type sidecars struct {
	label          string // "" or " B"
	client, server task
}

// mbRun is the -appmesh run's state, torn down by close (from the run or
// from the signal handler).
type mbRun struct {
	b       *bench
	mu      sync.Mutex // protects lab, servers and lns
	lab     *netns.Lab
	servers []*weftbin.Server
	lns     []net.Listener // the xDS forwarders
	once    sync.Once
}

func (r *mbRun) close() {
	r.once.Do(func() {
		r.b.stopAll()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, ln := range r.lns {
			ln.Close()
		}
		for _, s := range r.servers {
			s.Kill()
		}
		if r.lab != nil {
			if err := r.lab.Close(); err != nil {
				log.Printf("remove the namespaces: %v", err)
			}
			if left := netns.Remaining(context.Background(), r.lab.Prefix()); len(left) > 0 {
				log.Printf("left behind: %v", left)
			}
		}
		os.RemoveAll(r.b.dir)
	})
}

// runAppMesh sets the layout up, measures it and tears it down, also on
// SIGINT or SIGTERM.
func runAppMesh(o appmeshOpts) error {
	if os.Geteuid() != 0 {
		return errors.New("-appmesh needs root (network namespaces and iptables)")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore", "setpriv", "haproxy", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("-appmesh needs %s: %w", tool, err)
		}
	}
	ctx := context.Background()
	r := &mbRun{b: &bench{weft: o.weft, app: o.app, dir: mustTemp()}}
	defer r.close()
	// The client's haproxy, as the proxy's UID, reads its configuration there.
	if err := os.Chmod(r.b.dir, 0o755); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { // ends at a signal (tearing down and exiting) or with the process
		s := <-sig
		log.Printf("%v: removing the namespaces and processes", s)
		r.close()
		os.Exit(1)
	}()
	if gone, err := netns.Sweep(ctx, mbFamily); err != nil || len(gone) > 0 {
		log.Printf("removed what earlier runs left: %v (err %v)", gone, err)
	}
	lab, err := netns.New(ctx, mbFamily, mbSubnet, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.lab = lab
	r.mu.Unlock()
	a, err := r.sidecars(ctx, o, "", "bench", o.weft, cmp.Or(o.proxy, o.weft), o.args, 11, 12)
	if err != nil {
		return err
	}
	sides := []*sidecars{a}
	if o.weftB != "" {
		bs, err := r.sidecars(ctx, o, " B", "bench-b", o.weftB, cmp.Or(o.proxyB, o.weftB), o.argsB, 21, 22)
		if err != nil {
			return err
		}
		sides = append(sides, bs)
	}
	direct, err := r.b.startIn(a.server.host, -1, "app-direct", appBin(r.b), []string{"COLOR=blue"}, "colorapp", "--listen", fmt.Sprintf(":%d", mbDirectPort))
	if err != nil {
		return err
	}
	haHost, haProcs, err := r.haproxies(ctx, o.logs)
	if err != nil {
		return err
	}
	targets := []mbTarget{{name: "app direct", host: a.client.host, url: fmt.Sprintf("http://%s:%d/", a.server.host.Addr, mbDirectPort), procs: []*os.Process{direct}}}
	for _, s := range sides {
		targets = append(targets, mbTarget{name: "two weft sidecars, App Mesh" + s.label, host: s.client.host,
			url: fmt.Sprintf("http://%s:%d/", mbService, mbAppPort), dial: netip.AddrPortFrom(s.server.host.Addr, mbAppPort).String(),
			procs: []*os.Process{s.client.proxy, s.server.proxy},
			// The translator's stat prefixes of the egress and ingress
			// connection managers.
			counted: []counter{{s.client.host, "http.egress.downstream_rq_total"}, {s.server.host, "http.ingress.downstream_rq_total"}}})
	}
	targets = append(targets, mbTarget{name: "two haproxies, intercepted", host: haHost, url: fmt.Sprintf("http://%s:%d/", mbService, mbAppPort),
		dial: netip.AddrPortFrom(mbAddr(32), mbAppPort).String(), procs: haProcs})
	for _, t := range targets {
		if err := t.wait(ctx, 60*time.Second); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	if o.hold {
		for _, t := range targets {
			fmt.Printf("%s: %s from namespace %s (dialing %s), pids %v\n", t.name, t.url, t.host.Name, cmp.Or(t.dial, hostOf(t.url)), pids(t.procs))
		}
		fmt.Printf("sidecars' admin on %s in their namespaces; outputs in %s; Ctrl-C tears down\n", mbAdmin, r.b.dir)
		select {} // the signal handler tears down and exits
	}
	fmt.Print(machine(o.weft))
	fmt.Printf("-appmesh: weft server %s, sidecars %s", o.weft, cmp.Or(o.proxy, o.weft))
	if o.weftB != "" {
		fmt.Printf("; B: weft server %s, sidecars %s", o.weftB, cmp.Or(o.proxyB, o.weftB))
	}
	fmt.Printf("; access logs %v\n", o.logs)
	measureAppMesh(o, targets)
	for _, s := range sides {
		for _, t := range []struct {
			name string
			task task
		}{{"client" + s.label, s.client}, {"server" + s.label, s.server}} {
			printPlacement(t.name, t.task)
		}
	}
	if o.logs {
		r.b.logBytes()
	}
	return nil
}

func pids(ps []*os.Process) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Pid)
	}
	return out
}

// appBin is the binary that runs weft colorapp.
func appBin(b *bench) string {
	if b.app != "" {
		return b.app
	}
	return b.weft
}

// sidecars starts weft server (the binary server; its embedded store in
// the bench's directory), creates one mesh there and builds its two tasks,
// with sidecars run by proxy (weft or weft-proxy of the same build) with
// the extra arguments; the tasks' addresses end in cl and sv. A build's sidecars are configured by
// the same build's server, so that a before and an after compare as
// releases do.
func (r *mbRun) sidecars(ctx context.Context, o appmeshOpts, label, mesh, server, proxy string, extra []string, cl, sv byte) (*sidecars, error) {
	s := &sidecars{label: label}
	suffix := strings.ToLower(strings.TrimSpace(label))
	srv, err := weftbin.StartServer(ctx, server, mesh, "--data-dir", filepath.Join(r.b.dir, "data-"+mesh),
		"--region", mbRegion, "--account-id", mbAccount)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.servers = append(r.servers, srv)
	r.mu.Unlock()
	api := newMeshAPI(srv.API)
	if s.client.host, err = r.task(ctx, "client"+suffix, mbAddr(cl), "", strconv.Itoa(mbDirectPort), srv.XDS); err != nil {
		return nil, err
	}
	if s.server.host, err = r.task(ctx, "server"+suffix, mbAddr(sv), strconv.Itoa(mbAppPort), "", srv.XDS); err != nil {
		return nil, err
	}
	if _, err := r.b.startIn(s.server.host, -1, "app"+suffix, appBin(r.b), []string{"COLOR=blue"}, "colorapp", "--listen", fmt.Sprintf(":%d", mbAppPort)); err != nil {
		return nil, err
	}
	if err := api.createMesh(ctx, mesh, s.client.host.Addr, s.server.host.Addr, o.logs); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		node string
		task *task
	}{{"server", &s.server}, {"client", &s.client}} {
		env := []string{
			fmt.Sprintf("APPMESH_RESOURCE_ARN=arn:aws:appmesh:%s:%s:mesh/%s/virtualNode/%s", mbRegion, mbAccount, mesh, t.node),
			fmt.Sprintf("APPMESH_XDS_ENDPOINT=127.0.0.1:%d", mbXDSPort),
		}
		name := "proxy-" + t.node + suffix
		args := append([]string{"proxy", "--admin-addr", mbAdmin}, extra...)
		if t.task.proxy, err = r.b.startIn(t.task.host, intercept.DefaultIgnoredUID, name, proxy, env, args...); err != nil {
			return nil, err
		}
		t.task.log = filepath.Join(r.b.dir, name+".log")
	}
	return s, nil
}

// task creates a namespace with the interception: inbound TCP to appPorts
// goes to the ingress listener, outbound TCP to anywhere but ignoredPorts
// (and 22) from any UID but the proxy's to the egress listener. With xds,
// the namespace's 127.0.0.1:15128 is forwarded to that address on this
// process's loopback (weft server's xDS).
func (r *mbRun) task(ctx context.Context, name string, addr netip.Addr, appPorts, ignoredPorts, xds string) (*netns.Host, error) {
	r.mu.Lock()
	lab := r.lab
	r.mu.Unlock()
	h, err := lab.AddHost(ctx, name, addr, netns.HostOptions{})
	if err != nil {
		return nil, err
	}
	if xds != "" {
		if err := r.forward(h, xds); err != nil {
			return nil, fmt.Errorf("%s: xDS forwarder: %w", name, err)
		}
	}
	out, err := h.Command(ctx, -1, r.b.weft, "intercept", "--app-ports", appPorts,
		"--ignored-uid", strconv.Itoa(intercept.DefaultIgnoredUID),
		"--proxy-ingress-port", strconv.Itoa(intercept.DefaultProxyIngressPort),
		"--proxy-egress-port", strconv.Itoa(intercept.DefaultProxyEgressPort),
		"--egress-ignored-ports", ignoredPorts).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: weft intercept: %w: %s", name, err, out)
	}
	return h, nil
}

// forward listens on 127.0.0.1:15128 inside h and relays each connection
// to to, on this process's loopback.
func (r *mbRun) forward(h *netns.Host, to string) error {
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", mbXDSPort))
		return err
	}); err != nil {
		return err
	}
	r.mu.Lock()
	r.lns = append(r.lns, ln)
	r.mu.Unlock()
	go func() { // accepts until close closes ln
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relayConn(c, to) // ends when the proxy or weft server closes
		}
	}()
	return nil
}

// haproxies builds two more tasks with the same interception, whose
// sidecars are haproxies configured by hand (the two-haproxy shape of the
// other paths): the client's on the egress port, as the proxy's UID, to
// the server task's app port; the server's on the ingress port, to the app
// on 127.0.0.1. It returns the client task's host and the two processes,
// client's first.
func (r *mbRun) haproxies(ctx context.Context, logs bool) (*netns.Host, []*os.Process, error) {
	cfg := haproxyConfig
	if logs {
		cfg = haproxyLoggedConfig
	}
	client, err := r.task(ctx, "client-h", mbAddr(31), "", "", "")
	if err != nil {
		return nil, nil, err
	}
	server, err := r.task(ctx, "server-h", mbAddr(32), strconv.Itoa(mbAppPort), "", "")
	if err != nil {
		return nil, nil, err
	}
	if _, err := r.b.startIn(server, -1, "app-h", appBin(r.b), []string{"COLOR=blue"}, "colorapp", "--listen", fmt.Sprintf(":%d", mbAppPort)); err != nil {
		return nil, nil, err
	}
	start := func(h *netns.Host, name string, port int, to string) (*os.Process, error) {
		p := filepath.Join(r.b.dir, name+".cfg")
		if err := os.WriteFile(p, []byte(cfg(fmt.Sprintf(":%d", port), to)), 0o644); err != nil {
			return nil, err
		}
		return r.b.startIn(h, intercept.DefaultIgnoredUID, name, "haproxy", nil, "-db", "-f", p)
	}
	hs, err := start(server, "haproxy-server", intercept.DefaultProxyIngressPort, fmt.Sprintf("127.0.0.1:%d", mbAppPort))
	if err != nil {
		return nil, nil, err
	}
	hc, err := start(client, "haproxy-client", intercept.DefaultProxyEgressPort, netip.AddrPortFrom(server.Addr, mbAppPort).String())
	if err != nil {
		return nil, nil, err
	}
	return client, []*os.Process{hc, hs}, nil
}

// startIn runs argv in h's namespace as uid (-1: as this process), its
// output in the bench's directory as name.log, and returns the process: ip
// netns exec and setpriv exec it, so its pid is the command's.
func (b *bench) startIn(h *netns.Host, uid int, name, bin string, env []string, args ...string) (*os.Process, error) {
	cmd := h.Command(context.Background(), uid, append([]string{bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	lf, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	dieWithParent(cmd) // ip netns exec's; setpriv, changing credentials, clears it for what it runs (stopAll remains)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	b.mu.Lock()
	b.procs = append(b.procs, cmd)
	b.mu.Unlock()
	return cmd.Process, nil
}

// nsDial opens a connection to addr (an address, not a name) from inside h.
func nsDial(ctx context.Context, h *netns.Host, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// get reads url's body from inside h (dialing dial, or url's address).
func nsGet(ctx context.Context, h *netns.Host, dial, url string) (int, string, error) {
	c := mbClient(h, dial, 1)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}
