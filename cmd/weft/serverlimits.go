package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/server"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// limitFlags adds the flags of weft server's limits to fs, each with an
// environment variable (WEFT_ and the flag's name in capitals) that applies
// when the flag is not given. The returned func, called after fs.Parse,
// applies the variables and completes cfg.
func limitFlags(fs *flag.FlagSet, cfg *server.Config) func() error {
	var names []string
	add := func(name string) string {
		names = append(names, name)
		return fmt.Sprintf(" (env %s)", envName(name))
	}
	a, x := &cfg.API, &cfg.XDS
	fs.DurationVar(&a.ReadHeaderTimeout, "api-read-header-timeout", server.DefaultAPIReadHeaderTimeout, "API: time to read a request's headers"+add("api-read-header-timeout"))
	fs.DurationVar(&a.ReadTimeout, "api-read-timeout", server.DefaultAPIReadTimeout, "API: time to read a whole request, headers and body; a slower client is cut off"+add("api-read-timeout"))
	fs.DurationVar(&a.IdleTimeout, "api-idle-timeout", server.DefaultAPIIdleTimeout, "API: a keep-alive connection without a request for this long is closed"+add("api-idle-timeout"))
	fs.DurationVar(&a.WriteTimeout, "api-write-timeout", server.DefaultAPIWriteTimeout, "API: time to write a response, from the end of its request's headers; a client that does not read it is cut off"+add("api-write-timeout"))
	fs.IntVar(&a.MaxConns, "api-max-conns", server.DefaultAPIMaxConns, "API: open connections; beyond, a new one is answered 503 and closed"+add("api-max-conns"))
	fs.IntVar(&a.LoopbackReserve, "api-loopback-reserve", server.DefaultAPILoopbackReserve, "API: connections beyond --api-max-conns that loopback peers (a local health probe) may still open; 0 for none"+add("api-loopback-reserve"))
	perConn := fs.Uint("xds-max-streams-per-conn", xdsserver.DefaultMaxStreamsPerConn, "xDS: concurrent streams on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)"+add("xds-max-streams-per-conn"))
	fs.IntVar(&x.MaxStreamsPerIdentity, "xds-max-streams-per-node", xdsserver.DefaultMaxStreamsPerIdentity, "xDS: streams of one node id; beyond, ResourceExhausted"+add("xds-max-streams-per-node"))
	fs.IntVar(&cfg.XDSMaxConns, "xds-max-conns", server.DefaultXDSMaxConns, "xDS: open connections from peers other than loopback; beyond, a new one is closed at once"+add("xds-max-conns"))
	fs.IntVar(&x.MaxPushesInFlight, "xds-max-pushes-in-flight", xdsserver.DefaultMaxPushesInFlight, "xDS: proxies a write's pushes may await answers from at once; the others wait their turn; -1 for no bound"+add("xds-max-pushes-in-flight"))
	fs.IntVar(&x.MaxStreams, "xds-max-streams", xdsserver.DefaultMaxStreams, "xDS: streams of the whole server; beyond, ResourceExhausted"+add("xds-max-streams"))
	fs.IntVar(&cfg.DNS.MaxUDPSize, "dns-max-udp-size", dns.DefaultMaxUDPSize, "DNS: largest UDP answer whatever EDNS size a client advertises (512 without EDNS); longer ones are truncated"+add("dns-max-udp-size"))
	fs.IntVar(&cfg.DNS.MaxTCPConns, "dns-max-tcp-conns", dns.DefaultMaxTCPConns, "DNS: open TCP connections; a client beyond waits until one closes"+add("dns-max-tcp-conns"))
	fs.IntVar(&cfg.DNS.MaxForwards, "dns-max-forwards", dns.DefaultMaxForwards, "DNS: queries forwarded to --dns-upstreams at once; beyond, SERVFAIL"+add("dns-max-forwards"))
	rate := fs.Int("dns-rrl-rate", dns.DefaultRRLRate, "DNS: UDP responses per second per client /24 (IPv6 /56) outside --dns-allow before rate limiting; 0 for no limit"+add("dns-rrl-rate"))
	slip := fs.Int("dns-rrl-slip", dns.DefaultRRLSlip, "DNS: every Nth rate-limited response is sent truncated (TC=1), the others dropped; 0 drops all"+add("dns-rrl-slip"))
	allow := fs.String("dns-allow", "", "DNS: the mesh's clients (CIDRs or addresses, comma-separated): their other names go to --dns-upstreams and they are not rate limited; default: loopback and the networks of the interfaces --dns-addr is on"+add("dns-allow"))
	return func() error {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range names {
			if v, ok := os.LookupEnv(envName(name)); ok && !set[name] {
				if err := fs.Set(name, v); err != nil {
					return fmt.Errorf("%s: %w", envName(name), err)
				}
			}
		}
		x.MaxStreamsPerConn = uint32(*perConn)
		cfg.DNS.RRLRate, cfg.DNS.RRLSlip = offIfZero(*rate), offIfZero(*slip)
		if a.LoopbackReserve == 0 {
			a.LoopbackReserve = -1
		}
		for _, s := range strings.Split(*allow, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				ip, ierr := netip.ParseAddr(s)
				if ierr != nil {
					return fmt.Errorf("--dns-allow %q: want a CIDR or an address", s)
				}
				p = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
			}
			cfg.DNS.Allow = append(cfg.DNS.Allow, p.Masked())
		}
		return nil
	}
}

// offIfZero maps a flag's 0 ("off") to the negative value the package
// takes for it (its 0 means the default).
func offIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func envName(flagName string) string {
	return "WEFT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
