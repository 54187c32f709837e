// Package intercept installs, in the current network namespace, the iptables
// rules that ECS sets up for a task whose proxyConfiguration is of type
// APPMESH: inbound TCP to the application's ports goes to the proxy's ingress
// port, and outbound TCP that does not come from the proxy's own UID or GID
// goes to the proxy's egress port.
//
// The rules live in two chains of the nat table, APPMESH_INGRESS (jumped to
// from PREROUTING) and APPMESH_EGRESS (jumped to from OUTPUT), and one of the
// raw table, WEFT_PROXY_ZONE (from OUTPUT; see ProxyZone), so that Apply can
// be repeated with new settings and Remove takes away exactly what Apply
// added. The iptables binaries do the work; nothing is kept in memory.
package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// Chain names. The nat table's are App Mesh's, so an operator who knew App
// Mesh on EC2 recognises them in iptables -t nat -S; the raw table's is
// weft's own.
const (
	IngressChain = "APPMESH_INGRESS"
	EgressChain  = "APPMESH_EGRESS"
	ZoneChain    = "WEFT_PROXY_ZONE"
)

// ProxyZone is the conntrack zone of the proxy's own outbound connections,
// in their original direction.
//
// Why: a REDIRECT is decided once per conntrack entry. When a peer resets
// one of the proxy's connections, conntrack keeps its entry (not
// redirected) for nf_conntrack_tcp_timeout_close, 10 s, and a SYN on the
// same 4-tuple within that time is taken into that entry, not treated as
// a new connection. The kernel checks only sockets when it picks a source
// port, so it may give an application's connection to the same
// destination that very port: the connection then went straight to the
// peer, past the proxy (seen as rare EOFs from a STRICT TLS peer under
// load). With the proxy's connections in a zone of their own, an
// application's SYN never matches their entries. Only the original
// direction is zoned: replies come back in the default zone, where the
// entry's reply tuple is.
const ProxyZone = 1337

// PortRange is the kernel's range of ephemeral source ports
// (net.ipv4.ip_local_port_range), where the proxy's outbound connections
// take theirs. Packets the proxy sends from other ports (its listeners'
// answers) must stay in the default zone, where their entries are.
type PortRange struct{ Lo, Hi uint16 }

// DefaultPortRange is Linux's default ip_local_port_range.
var DefaultPortRange = PortRange{32768, 60999}

// Defaults of ECS's APPMESH proxyConfiguration.
const (
	DefaultIgnoredUID       = 1337
	DefaultProxyIngressPort = 15000
	DefaultProxyEgressPort  = 15001
)

// AlwaysIgnoredEgressPort is never redirected, whatever the configuration says,
// as App Mesh's route manager did, so that SSH out of a task keeps working.
const AlwaysIgnoredEgressPort = 22

// maxMultiport is how many ports one iptables multiport match accepts.
const maxMultiport = 15

// Config is one task's proxyConfiguration. A negative IgnoredUID or
// IgnoredGID means "not set"; at least one of them must be set, or the proxy
// would intercept its own traffic.
type Config struct {
	AppPorts           []uint16       // inbound TCP to these ports goes to ProxyIngressPort
	IgnoredUID         int            // outbound TCP from this UID is left alone; -1: none
	IgnoredGID         int            // outbound TCP from this GID is left alone; -1: none
	ProxyIngressPort   uint16         // the proxy's ingress listener
	ProxyEgressPort    uint16         // the proxy's egress listener
	EgressIgnoredIPs   []netip.Prefix // outbound TCP to these is left alone (one address is a /32 or /128)
	EgressIgnoredPorts []uint16       // outbound TCP to these ports is left alone; 22 always is
}

// Validate reports the first thing in c that ECS would also have refused.
func (c Config) Validate() error {
	if c.IgnoredUID < 0 && c.IgnoredGID < 0 {
		return errors.New("one of the ignored UID or the ignored GID must be set, or the proxy would intercept its own traffic")
	}
	if c.ProxyEgressPort == 0 {
		return errors.New("proxy egress port must be set")
	}
	if len(c.AppPorts) > 0 && c.ProxyIngressPort == 0 {
		return errors.New("proxy ingress port must be set when there are app ports")
	}
	for _, p := range c.AppPorts {
		if p == 0 {
			return errors.New("app port 0 is not a port")
		}
		if p == c.ProxyIngressPort || p == c.ProxyEgressPort {
			return fmt.Errorf("app port %d is also a proxy port", p)
		}
	}
	return nil
}

// Family is an address family: iptables for IPv4, ip6tables for IPv6.
type Family int

// The two families.
const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

func (f Family) has(p netip.Prefix) bool { return p.Addr().Is4() == (f == IPv4) }

// jump is a rule in a built-in chain that sends traffic to one of ours.
type jump struct {
	table string   // nat or raw
	chain string   // PREROUTING or OUTPUT
	spec  []string // match and target, as iptables -A takes them
}

// jumps returns the rules Apply adds to built-in chains. Only connections
// from elsewhere enter the ingress chain, and only connections to elsewhere
// enter the egress and zone chains: traffic inside the task (app to
// 127.0.0.1, proxy to app) is never redirected.
func jumps() []jump {
	return []jump{
		{"nat", "PREROUTING", []string{"-p", "tcp", "-m", "addrtype", "!", "--src-type", "LOCAL", "-j", IngressChain}},
		{"nat", "OUTPUT", []string{"-p", "tcp", "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", EgressChain}},
		{"raw", "OUTPUT", []string{"-p", "tcp", "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", ZoneChain}},
	}
}

// Rules returns the nat and raw tables' chains for family f as
// iptables-restore input, to be loaded with --noflush: declaring a chain
// empties it, so loading it again replaces the rules instead of adding to
// them. ephemeral is the namespace's ip_local_port_range.
func Rules(c Config, f Family, ephemeral PortRange) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", IngressChain, EgressChain)
	for _, ports := range chunks(c.AppPorts) {
		fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s -j REDIRECT --to-ports %d\n", IngressChain, ports, c.ProxyIngressPort)
	}
	// The proxy's own connections first: they are the majority once the
	// proxy is up, and they must never loop back into it.
	if c.IgnoredUID >= 0 {
		fmt.Fprintf(&b, "-A %s -m owner --uid-owner %d -j RETURN\n", EgressChain, c.IgnoredUID)
	}
	if c.IgnoredGID >= 0 {
		fmt.Fprintf(&b, "-A %s -m owner --gid-owner %d -j RETURN\n", EgressChain, c.IgnoredGID)
	}
	for _, ports := range chunks(egressIgnoredPorts(c.EgressIgnoredPorts)) {
		fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s -j RETURN\n", EgressChain, ports)
	}
	for _, p := range c.EgressIgnoredIPs {
		if f.has(p) {
			fmt.Fprintf(&b, "-A %s -p tcp -d %s -j RETURN\n", EgressChain, p.Masked())
		}
	}
	fmt.Fprintf(&b, "-A %s -p tcp -j REDIRECT --to-ports %d\n", EgressChain, c.ProxyEgressPort)
	b.WriteString("COMMIT\n")
	b.WriteString("*raw\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", ZoneChain)
	sports := fmt.Sprintf("%d:%d", ephemeral.Lo, ephemeral.Hi)
	if c.IgnoredUID >= 0 {
		fmt.Fprintf(&b, "-A %s -p tcp -m owner --uid-owner %d -m tcp --sport %s -j CT --zone-orig %d\n", ZoneChain, c.IgnoredUID, sports, ProxyZone)
	}
	if c.IgnoredGID >= 0 {
		fmt.Fprintf(&b, "-A %s -p tcp -m owner --gid-owner %d -m tcp --sport %s -j CT --zone-orig %d\n", ZoneChain, c.IgnoredGID, sports, ProxyZone)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ParsePortRange parses ip_local_port_range's "32768\t60999".
func ParsePortRange(s string) (PortRange, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return PortRange{}, fmt.Errorf("port range %q: want two numbers", s)
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || lo == 0 || lo > hi {
		return PortRange{}, fmt.Errorf("port range %q: want two ports, the lower first", s)
	}
	return PortRange{uint16(lo), uint16(hi)}, nil
}

// egressIgnoredPorts adds port 22 and drops duplicates, keeping the order.
func egressIgnoredPorts(ports []uint16) []uint16 {
	out := []uint16{AlwaysIgnoredEgressPort}
	for _, p := range ports {
		dup := false
		for _, q := range out {
			dup = dup || p == q
		}
		if !dup {
			out = append(out, p)
		}
	}
	return out
}

// chunks renders ports as comma lists of at most maxMultiport ports each.
func chunks(ports []uint16) []string {
	var out []string
	for len(ports) > 0 {
		n := min(len(ports), maxMultiport)
		s := make([]string, n)
		for i, p := range ports[:n] {
			s[i] = strconv.Itoa(int(p))
		}
		out = append(out, strings.Join(s, ","))
		ports = ports[n:]
	}
	return out
}

// Tables runs the iptables binaries of one family.
type Tables struct {
	Family Family
	// Wrap, when set, goes before every command, e.g. ip netns exec NAME to
	// work in another network namespace. Empty means the current one.
	Wrap []string
	Log  *slog.Logger
}

// Apply installs c, replacing whatever an earlier Apply installed. Running it
// twice with the same c leaves the same rules as running it once.
func (t Tables) Apply(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	// The range is the namespace's (the sysctl is per network namespace).
	ephemeral := DefaultPortRange
	if out, err := t.run(ctx, "", "cat", "/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if r, err := ParsePortRange(string(out)); err == nil {
			ephemeral = r
		}
	}
	if _, err := t.run(ctx, Rules(c, t.Family, ephemeral), t.Family.String()+"-restore", "-w", "--noflush"); err != nil {
		return fmt.Errorf("load %s, %s and %s (the raw table's CT target needs the kernel's xt_CT): %w", IngressChain, EgressChain, ZoneChain, err)
	}
	for _, j := range jumps() {
		check := append([]string{"-w", "-t", j.table, "-C", j.chain}, j.spec...)
		if _, err := t.run(ctx, "", t.Family.String(), check...); err == nil {
			continue
		}
		add := append([]string{"-w", "-t", j.table, "-A", j.chain}, j.spec...)
		if _, err := t.run(ctx, "", t.Family.String(), add...); err != nil {
			return fmt.Errorf("add jump from %s %s: %w", j.table, j.chain, err)
		}
	}
	t.logger().Info("interception applied", "family", t.Family.String(), "app_ports", c.AppPorts,
		"ingress_port", c.ProxyIngressPort, "egress_port", c.ProxyEgressPort,
		"ignored_uid", c.IgnoredUID, "ignored_gid", c.IgnoredGID)
	return nil
}

// Remove deletes every rule that jumps to our chains, then the chains. It
// needs no Config: whatever settings Apply was given, Remove undoes them. It
// is not an error when nothing is installed.
func (t Tables) Remove(ctx context.Context) error {
	bin := t.Family.String()
	for _, tc := range []struct{ table, builtin string }{{"nat", "PREROUTING"}, {"nat", "OUTPUT"}, {"raw", "OUTPUT"}} {
		out, err := t.run(ctx, "", bin, "-w", "-t", tc.table, "-S", tc.builtin)
		if err != nil {
			return fmt.Errorf("list %s %s: %w", tc.table, tc.builtin, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "-A" || !jumpsToOurs(f) {
				continue
			}
			del := append([]string{"-w", "-t", tc.table, "-D"}, f[1:]...)
			if _, err := t.run(ctx, "", bin, del...); err != nil {
				return fmt.Errorf("delete %q: %w", line, err)
			}
		}
	}
	for _, tc := range []struct{ table, chain string }{{"nat", IngressChain}, {"nat", EgressChain}, {"raw", ZoneChain}} {
		// -F fails only when the chain does not exist: then there is
		// nothing to delete either.
		if _, err := t.run(ctx, "", bin, "-w", "-t", tc.table, "-F", tc.chain); err != nil {
			continue
		}
		if _, err := t.run(ctx, "", bin, "-w", "-t", tc.table, "-X", tc.chain); err != nil {
			return fmt.Errorf("delete chain %s: %w", tc.chain, err)
		}
	}
	t.logger().Info("interception removed", "family", bin)
	return nil
}

func jumpsToOurs(fields []string) bool {
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] == "-j" && (fields[i+1] == IngressChain || fields[i+1] == EgressChain || fields[i+1] == ZoneChain) {
			return true
		}
	}
	return false
}

// run runs one command (behind Wrap) with stdin and returns its stdout. The
// error carries stderr, which is where iptables says what it did not like.
func (t Tables) run(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, t.Wrap...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (t Tables) logger() *slog.Logger {
	if t.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Log
}

// ParsePorts parses a comma-separated port list such as "80,8080". Empty
// gives none.
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q: not a number from 1 to 65535", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// ParseIPs parses a comma-separated list of addresses and CIDR blocks such as
// "169.254.170.2,10.0.0.0/8" (ECS's EgressIgnoredIPs).
func ParseIPs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("egress ignored IP %q: %w", f, err)
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("egress ignored IP %q: %w", f, err)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
