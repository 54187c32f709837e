package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/colorapp"
	"github.com/weftmesh/weft/internal/netns"
)

const (
	region   = "us-east-1"
	account  = "111122223333"
	proxyUID = 1337 // the tutorial's "user": "1337" and IgnoredUID
	// readyWithin is the task definitions' startTimeout.
	readyWithin = 30 * time.Second
)

func arn(kind, name string) string {
	return fmt.Sprintf("arn:aws:appmesh:%s:%s:mesh/%s/%s/%s", region, account, meshName, kind, name)
}

func taskID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// netnsUsable reports whether the namespace layout can run here: root, the
// tools, and a kernel and sandbox that let us create a namespace (a
// container without CAP_SYS_ADMIN does not), which it tries.
func netnsUsable(ctx context.Context) bool {
	if os.Geteuid() != 0 {
		return false
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	probe := netns.Prefix(netnsFamily, os.Getpid()) + "-probe"
	if exec.CommandContext(ctx, "ip", "netns", "add", probe).Run() != nil {
		return false
	}
	return exec.CommandContext(ctx, "ip", "netns", "del", probe).Run() == nil
}

// The namespace layout's names (the lab family; the demo's process id
// follows) and addresses: a private /24 of its own on a bridge with no
// address in the root namespace.
const netnsFamily = "wftd"

var netnsSubnet = netip.MustParsePrefix("10.251.90.0/24")

func netnsAddr(last byte) netip.Addr {
	a := netnsSubnet.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

// setUpNetns builds the tutorial as ECS tasks in network namespaces. The
// returned cleanup removes the namespaces; it must run after ps.stopAll.
func setUpNetns(ctx context.Context, opt Options, ps *procs) (*env, func(), error) {
	if _, err := netns.Sweep(ctx, netnsFamily); err != nil {
		return nil, nil, fmt.Errorf("remove an earlier demo's namespaces: %w", err)
	}
	lab, err := netns.New(ctx, netnsFamily, netnsSubnet, opt.Log)
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		if err := lab.Close(); err != nil {
			opt.Log.Warn("remove demo namespaces", "err", err)
		}
	}
	ctlIP := netnsAddr(1)
	ctl, err := lab.AddHost(ctx, "ctl", ctlIP, netns.HostOptions{})
	if err != nil {
		return nil, cleanup, err
	}
	xds := netip.AddrPortFrom(ctlIP, 15128).String()
	api := "http://" + netip.AddrPortFrom(ctlIP, 9080).String()
	server, err := ps.start("weft server", ctl.Command(ps.ctx, -1, opt.Binary, "server",
		"--api-addr", netip.AddrPortFrom(ctlIP, 9080).String(),
		"--xds-addr", xds,
		"--dns-addr", netip.AddrPortFrom(ctlIP, 53).String(),
		"--data-dir", filepath.Join(ps.dir, "data"),
		// Only the demo's own namespaces reach the private bridge.
		"--insecure",
		"--region", region, "--account-id", account), -1)
	if err != nil {
		return nil, cleanup, err
	}
	// The API is inside ctl's namespace; the clients reach it from there.
	apiHTTP := nsClient(ctl, nil)
	if err := waitHTTP(ctx, ps, server, apiHTTP, api+"/healthz", "", readyWithin); err != nil {
		return nil, cleanup, err
	}
	c := newClients(api, apiHTTP)
	serviceIDs, err := createMesh(ctx, c, 80)
	if err != nil {
		return nil, cleanup, err
	}

	// The API is in ctl's namespace, behind a bridge the host has no
	// address on: forward a loopback port to it.
	hostAPI, err := forwardAPI(ps, ctl, netip.AddrPortFrom(ctlIP, 9080).String())
	if err != nil {
		return nil, cleanup, err
	}
	e := &env{target: "http://" + routerVS + "/", from: "the red task's app", api: c, apiURL: hostAPI}
	tasks := []struct {
		name string
		last byte
	}{{"blue", 12}, {"green", 13}, {"yellow", 14}, {"red", 11}, {"gateway", 21}}
	hosts := map[string]*netns.Host{}
	for _, tk := range tasks {
		h, err := lab.AddHost(ctx, tk.name, netnsAddr(tk.last), netns.HostOptions{Nameserver: ctlIP})
		if err != nil {
			return nil, cleanup, err
		}
		hosts[tk.name] = h
		uid, kind := proxyUID, "virtualNode"
		if tk.name == "gateway" {
			uid, kind = -1, "virtualGateway"
		} else {
			// The task definitions' proxyConfiguration, plus the control
			// plane's address, which in ECS is outside the task's VPC.
			out, err := h.Command(ctx, -1, opt.Binary, "intercept",
				"--app-ports", "80", "--ignored-uid", strconv.Itoa(proxyUID),
				"--proxy-ingress-port", "15000", "--proxy-egress-port", "15001",
				"--egress-ignored-ips", "169.254.170.2,169.254.169.254,"+ctlIP.String()).CombinedOutput()
			if err != nil {
				return nil, cleanup, fmt.Errorf("%s: weft intercept: %w: %s", tk.name, err, out)
			}
		}
		resource := tk.name
		if tk.name == "gateway" {
			resource = gatewayName
		}
		cmd := h.Command(ps.ctx, uid, opt.Binary, "proxy")
		cmd.Env = append(os.Environ(), "APPMESH_RESOURCE_ARN="+arn(kind, resource), "APPMESH_XDS_ENDPOINT="+xds)
		proxy, err := ps.start(tk.name+" proxy", cmd, uid)
		if err != nil {
			return nil, cleanup, err
		}
		admin := nsClient(h, nil)
		if err := waitHTTP(ctx, ps, proxy, admin, "http://127.0.0.1:9901/ready", "LIVE", readyWithin); err != nil {
			return nil, cleanup, err
		}
		if tk.name != "gateway" {
			if tk.name != "blue" { // blue is not on the path the demo drives
				e.proxies = append(e.proxies, proxyAdmin{name: tk.name, client: admin, url: "http://127.0.0.1:9901"})
			}
			app := h.Command(ps.ctx, -1, opt.Binary, "colorapp", "--color", tk.name, "--listen", ":80")
			appProc, err := ps.start(tk.name+" app", app, -1)
			if err != nil {
				return nil, cleanup, err
			}
			if err := waitHTTP(ctx, ps, appProc, admin, "http://127.0.0.1:80/healthcheck", "hi", readyWithin); err != nil {
				return nil, cleanup, err
			}
			if err := register(ctx, c, serviceIDs[tk.name], taskID(), h.Addr.String(), 0); err != nil {
				return nil, cleanup, err
			}
		}
	}
	// The red task's app: names resolve through weft's DNS and
	// connections leave red's namespace, where iptables hands them to
	// red's proxy.
	e.client = nsClient(hosts["red"], &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return nsDial(ctx, hosts["red"], network, netip.AddrPortFrom(ctlIP, 53).String())
		},
	})
	return e, cleanup, nil
}

// nsClient is an HTTP client whose connections are opened inside h's
// namespace, resolving names with r (nil: addresses only).
func nsClient(h *netns.Host, r *net.Resolver) *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			// A new connection per request, as curl in a loop: a route
			// change shows on the next request.
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				if _, err := netip.ParseAddr(host); err != nil && r != nil {
					ips, err := r.LookupNetIP(ctx, "ip4", host)
					if err != nil {
						return nil, err
					}
					if len(ips) == 0 {
						return nil, fmt.Errorf("%s: no address", host)
					}
					addr = net.JoinHostPort(ips[0].String(), port)
				}
				return nsDial(ctx, h, network, addr)
			},
		},
	}
}

// nsDial opens a connection to an address (not a name) from inside h.
func nsDial(ctx context.Context, h *netns.Host, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// setUpLoopback builds a layout that needs no privilege: weft server on
// 127.0.0.1, the apps on 127.0.0.12-14 with ports of their own registered
// in Cloud Map, and one proxy, the virtual gateway, that every request
// passes through: its ingress routes /router to router.colors.local and its
// egress splits that between green and yellow.
func setUpLoopback(ctx context.Context, opt Options, ps *procs) (*env, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	xds := fmt.Sprintf("127.0.0.1:%d", ports[1])
	server, err := ps.start("weft server", exec.CommandContext(ps.ctx, opt.Binary, "server",
		"--api-addr", apiAddr, "--xds-addr", xds,
		"--dns-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--data-dir", filepath.Join(ps.dir, "data"),
		"--region", region, "--account-id", account), -1)
	if err != nil {
		return nil, err
	}
	local := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if err := waitHTTP(ctx, ps, server, local, "http://"+apiAddr+"/healthz", "", readyWithin); err != nil {
		return nil, err
	}
	c := newClients("http://"+apiAddr, nil)
	gatewayPort := ports[3]
	serviceIDs, err := createMesh(ctx, c, int32(gatewayPort))
	if err != nil {
		return nil, err
	}

	apps := []struct {
		name string
		ip   string
	}{{"blue", "127.0.0.12"}, {"green", "127.0.0.13"}, {"yellow", "127.0.0.14"}}
	for _, a := range apps {
		ln, err := net.Listen("tcp", a.ip+":0")
		if err != nil {
			return nil, fmt.Errorf("%s app: %w", a.name, err)
		}
		ps.bg.Go(func() { colorapp.Serve(ps.ctx, ln, a.name, opt.Log) }) // ends with ps.ctx, when Run returns
		port := ln.Addr().(*net.TCPAddr).Port
		if err := register(ctx, c, serviceIDs[a.name], taskID(), a.ip, port); err != nil {
			return nil, err
		}
	}

	// The admin listener on a free port, so a proxy or Envoy already on
	// 9901 here does not stop the demo. The gateway's egress listener
	// (15001, from xDS) has no such knob: it must be free.
	if err := portFree(15001); err != nil {
		return nil, err
	}
	admin := fmt.Sprintf("http://127.0.0.1:%d", ports[4])
	cmd := exec.CommandContext(ps.ctx, opt.Binary, "proxy", "--admin-addr", strings.TrimPrefix(admin, "http://"))
	cmd.Env = append(os.Environ(), "APPMESH_RESOURCE_ARN="+arn("virtualGateway", gatewayName), "APPMESH_XDS_ENDPOINT="+xds)
	proxy, err := ps.start("gateway proxy", cmd, -1)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, ps, proxy, local, admin+"/ready", "LIVE", readyWithin); err != nil {
		return nil, err
	}
	return &env{
		target:  fmt.Sprintf("http://127.0.0.1:%d/router", gatewayPort),
		from:    "this machine, through the color-gateway proxy",
		client:  local,
		proxies: []proxyAdmin{{name: "gateway", client: local, url: admin}},
		api:     c,
		apiURL:  "http://" + apiAddr,
	}, nil
}

// portFree checks that a port the demo cannot move is free on every
// address, and says which port and what to do when it is not.
func portFree(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return fmt.Errorf("port %d is in use on this machine; the gateway proxy's egress listener needs it "+
			"(a leftover weft proxy or Envoy? `ss -ltnp 'sport = :%d'` shows what holds it), "+
			"or run the demo as root for the namespace layout: %w", port, port, err)
	}
	return ln.Close()
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
