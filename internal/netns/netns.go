// Package netns builds small networks of Linux network namespaces with
// iproute2: a bridge, and hosts that are each a named namespace with one veth
// to the bridge, one address and a resolv.conf of their own. It runs commands
// inside a host (ip netns exec, so the host's resolv.conf applies) and opens
// sockets inside a host from this process. It is the ground of weft's
// end-to-end test and of weft demo when run as root.
//
// Everything a Lab creates is named with its family (a short name for the
// test or tool) followed by the creating process's id: two runs at once on
// one machine (two go test, a test and weft demo) never collide, and Sweep
// can remove what a killed run left behind without touching a live run's
// network or anything else. It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EtcDir is where ip netns exec looks for a namespace's own /etc files.
const EtcDir = "/etc/netns"

// maxLinkName is the kernel's limit on interface names (IFNAMSIZ - 1).
const maxLinkName = 15

// Lab is one bridge and the hosts attached to it.
type Lab struct {
	prefix string       // starts every name the lab creates
	subnet netip.Prefix // hosts' addresses come from here
	log    *slog.Logger

	mu    sync.Mutex // protects hosts and next
	hosts []*Host    // in creation order; Close removes them in reverse
	next  int        // number of the next host's veth
}

// Host is one namespace on the lab's bridge.
type Host struct {
	Name string     // the namespace's name, as ip netns list shows it
	Addr netip.Addr // its address on the bridge
	link string     // the root-namespace end of its veth
}

// pidWidth is how many base-36 digits of the process id a name carries:
// 36^5 is above any Linux pid_max.
const pidWidth = 5

// Prefix is what every name of family's lab made by process pid starts with.
func Prefix(family string, pid int) string {
	id := strconv.FormatInt(int64(pid), 36)
	return family + strings.Repeat("0", max(0, pidWidth-len(id))) + id
}

// New creates the bridge <prefix>br in the root namespace, with no address:
// hosts talk to each other through it, and the root namespace's own rules
// and routes are never involved. The prefix is Prefix(family, this
// process); family is 1 to 4 characters.
func New(ctx context.Context, family string, subnet netip.Prefix, log *slog.Logger) (*Lab, error) {
	if len(family) < 1 || len(family) > 4 {
		return nil, fmt.Errorf("lab family %q: want 1 to 4 characters", family)
	}
	prefix := Prefix(family, os.Getpid())
	if !subnet.Addr().Is4() {
		return nil, fmt.Errorf("lab subnet %s: only IPv4 is supported", subnet)
	}
	l := &Lab{prefix: prefix, subnet: subnet.Masked(), log: log}
	br := l.bridge()
	if err := ip(ctx, "link", "add", br, "type", "bridge"); err != nil {
		return nil, fmt.Errorf("create bridge: %w", err)
	}
	// Bridged frames must not meet the host's iptables (br_netfilter): a
	// host firewall's FORWARD policy would otherwise decide our test's fate.
	if err := ip(ctx, "link", "set", br, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0"); err != nil {
		l.log.Debug("bridge netfilter setting not available", "err", err)
	}
	if err := ip(ctx, "link", "set", br, "up"); err != nil {
		ip(context.WithoutCancel(ctx), "link", "del", br)
		return nil, fmt.Errorf("bring bridge up: %w", err)
	}
	l.log.Debug("lab up", "bridge", br, "subnet", l.subnet)
	return l, nil
}

func (l *Lab) bridge() string { return l.prefix + "br" }

// Prefix is what every name the lab creates starts with.
func (l *Lab) Prefix() string { return l.prefix }

// Subnet is the lab's address range.
func (l *Lab) Subnet() netip.Prefix { return l.subnet }

// HostOptions are optional settings of AddHost.
type HostOptions struct {
	// Nameserver, when valid, goes into the host's /etc/netns/<name>/resolv.conf.
	Nameserver netip.Addr
	// Search is the resolv.conf search list.
	Search []string
}

// AddHost creates namespace <prefix>-<name> with loopback up and eth0 at
// addr, veth'd to the bridge.
func (l *Lab) AddHost(ctx context.Context, name string, addr netip.Addr, opt HostOptions) (*Host, error) {
	if !l.subnet.Contains(addr) {
		return nil, fmt.Errorf("host %s: address %s is outside the lab's subnet %s", name, addr, l.subnet)
	}
	l.mu.Lock()
	idx := l.next
	l.next++
	l.mu.Unlock()
	h := &Host{
		Name: l.prefix + "-" + name,
		Addr: addr,
		link: fmt.Sprintf("%sv%d", l.prefix, idx),
	}
	if len(h.link) > maxLinkName {
		return nil, fmt.Errorf("host %s: interface name %s too long", name, h.link)
	}
	if err := ip(ctx, "netns", "add", h.Name); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", h.Name, err)
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	peer := h.link + "p"
	steps := [][]string{
		{"link", "add", h.link, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", h.Name},
		{"link", "set", h.link, "master", l.bridge()},
		{"link", "set", h.link, "up"},
		{"-n", h.Name, "link", "set", "lo", "up"},
		{"-n", h.Name, "link", "set", peer, "name", "eth0"},
		{"-n", h.Name, "addr", "add", netip.PrefixFrom(addr, l.subnet.Bits()).String(), "dev", "eth0"},
		{"-n", h.Name, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	if opt.Nameserver.IsValid() {
		if err := writeResolvConf(h.Name, opt.Nameserver, opt.Search); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	l.log.Debug("host up", "ns", h.Name, "addr", addr)
	return h, nil
}

func writeResolvConf(ns string, server netip.Addr, search []string) error {
	dir := filepath.Join(EtcDir, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "nameserver %s\n", server)
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	// One attempt with a short timeout: a name that weft's DNS does not
	// answer should fail fast in a test, not after glibc's 5 s x 2.
	b.WriteString("options timeout:1 attempts:1\n")
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	return nil
}

// Close removes every host (namespace, veth, /etc/netns directory) and the
// bridge. Processes still running inside a namespace keep it alive until they
// exit, but it loses its name and link; callers stop their processes first.
// It keeps going past errors and returns them all.
func (l *Lab) Close() error {
	ctx := context.Background()
	l.mu.Lock()
	hosts := l.hosts
	l.hosts = nil
	l.mu.Unlock()
	var errs []error
	for i := len(hosts) - 1; i >= 0; i-- {
		errs = append(errs, removeNamespace(ctx, hosts[i].Name))
	}
	for _, h := range hosts {
		errs = append(errs, removeLink(ctx, h.link, true))
	}
	errs = append(errs, removeLink(ctx, l.bridge(), false))
	return errors.Join(errs...)
}

// removeLink makes sure a root-namespace link is gone. A veth whose peer
// was in a deleted namespace disappears by itself, but asynchronously, once
// the kernel has dismantled the namespace: with waitFirst, wait a little for
// that before deleting it ourselves. Either way it is not an error if the
// link went meanwhile.
func removeLink(ctx context.Context, name string, waitFirst bool) error {
	deadline := time.Now().Add(5 * time.Second)
	for linkExists(ctx, name) {
		if !waitFirst || time.Now().After(deadline) {
			if err := ip(ctx, "link", "del", name); err != nil && linkExists(ctx, name) {
				return err
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func removeNamespace(ctx context.Context, name string) error {
	var errs []error
	if err := ip(ctx, "netns", "del", name); err != nil && namespaceExists(name) {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(EtcDir, name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func namespaceExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

func linkExists(ctx context.Context, name string) bool {
	return exec.CommandContext(ctx, "ip", "link", "show", name).Run() == nil
}

// Sweep removes the namespaces, /etc/netns directories and root-namespace
// links of family's labs whose process is gone: what a run that was killed
// before its cleanup left behind. Labs of live processes, this one's
// included, are left alone. It returns the names it removed.
func Sweep(ctx context.Context, family string) ([]string, error) {
	if family == "" {
		return nil, errors.New("sweep needs a family")
	}
	stale := func(name string) bool {
		rest, ok := strings.CutPrefix(name, family)
		if !ok || len(rest) < pidWidth {
			return false
		}
		pid, err := strconv.ParseInt(rest[:pidWidth], 36, 64)
		if err != nil {
			return false
		}
		_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
		return errors.Is(err, os.ErrNotExist)
	}
	var removed []string
	var errs []error
	nss, _ := os.ReadDir("/run/netns")
	for _, e := range nss {
		if stale(e.Name()) {
			errs = append(errs, removeNamespace(ctx, e.Name()))
			removed = append(removed, e.Name())
		}
	}
	etc, _ := os.ReadDir(EtcDir)
	for _, e := range etc {
		if stale(e.Name()) {
			errs = append(errs, os.RemoveAll(filepath.Join(EtcDir, e.Name())))
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	if err != nil {
		return removed, fmt.Errorf("list links: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "7: wftbr: <...>" or "8: wftv0@if2: <...>"
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if stale(name) && linkExists(ctx, name) {
			if err := ip(ctx, "link", "del", name); err != nil && linkExists(ctx, name) {
				errs = append(errs, err)
			}
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(errs...)
}

// Remaining lists the namespaces, /etc/netns directories and root-namespace
// links whose names start with prefix: after a Lab's Close, none of its own
// should be left.
func Remaining(ctx context.Context, prefix string) []string {
	var left []string
	for _, dir := range []string{"/run/netns", EtcDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				left = append(left, filepath.Join(dir, e.Name()))
			}
		}
	}
	out, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, prefix) {
				left = append(left, "link "+name)
			}
		}
	}
	return left
}

// Command returns a command that runs argv inside the host's namespace,
// through ip netns exec so that /etc/netns/<name>/resolv.conf is the
// command's /etc/resolv.conf. With uid >= 0 the command runs as that UID and
// GID (setpriv), as a container with "user": "1337" would.
func (h *Host) Command(ctx context.Context, uid int, argv ...string) *exec.Cmd {
	full := []string{"netns", "exec", h.Name}
	if uid >= 0 {
		full = append(full, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--")
	}
	full = append(full, argv...)
	return exec.CommandContext(ctx, "ip", full...)
}

// ip runs one iproute2 command; the error carries its stderr.
func ip(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
