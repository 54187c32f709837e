package dns

import (
	"fmt"
	"net"
	"net/netip"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Limits.
const (
	// DefaultMaxUDPSize caps a UDP answer to a client that advertises a
	// larger EDNS buffer (DNS Flag Day 2020's 1232 bytes, which fits any
	// path's MTU without fragments). Without EDNS, UDP answers stay within
	// 512 bytes. A longer answer is truncated (TC=1) and the client asks
	// again over TCP.
	DefaultMaxUDPSize = 1232
	// DefaultRRLRate is how many UDP responses per second a client subnet
	// (/24 IPv4, /56 IPv6) gets before response rate limiting; its bucket
	// holds one second's worth.
	DefaultRRLRate = 200
	// DefaultRRLSlip: of the responses over the rate, every DefaultRRLSlip-th
	// is sent empty with TC=1 (a real client retries over TCP, which
	// cannot be spoofed) and the others are dropped, as BIND's RRL does.
	DefaultRRLSlip = 2
	// DefaultMaxTCPConns caps the open TCP connections; a client beyond
	// waits in the listen backlog until one closes (each is closed after
	// 10 s without a query).
	DefaultMaxTCPConns = 1000
	// DefaultMaxForwards caps the queries forwarded to the upstreams at
	// once. Each holds a goroutine and a socket for up to the upstream
	// timeout per upstream; beyond the cap a query is answered SERVFAIL
	// at once (its client asks again). A query of the mesh's own clients
	// is not rate limited, so without it a flood of names under a slow
	// zone could take every descriptor of the process, whose xDS and
	// API servers share them.
	DefaultMaxForwards = 1024
	// rrlSubnets bounds the subnets tracked; when full, a new subnet is
	// limited until idle ones are forgotten.
	rrlSubnets = 100000
	// rrlV4Bits and rrlV6Bits are the client subnets RRL counts together.
	rrlV4Bits = 24
	rrlV6Bits = 56
)

// Limits bound what a client can get from the DNS server. Zero fields
// take their defaults.
type Limits struct {
	// MaxUDPSize caps UDP answers whatever EDNS buffer a client
	// advertises (at least 512).
	MaxUDPSize int
	// RRLRate is the responses per second of one client subnet over UDP;
	// negative turns response rate limiting off. Clients in Allow and TCP
	// are not limited: the limit is against reflection from elsewhere.
	RRLRate int
	// RRLSlip sends every RRLSlip-th limited response truncated instead of
	// dropping it; negative drops them all.
	RRLSlip int
	// MaxTCPConns caps the open TCP connections.
	MaxTCPConns int
	// MaxForwards caps the queries forwarded to the upstreams at once;
	// beyond, SERVFAIL.
	MaxForwards int
	// Allow are the mesh's own clients: their queries for other names
	// are forwarded to the upstreams (others are REFUSED), and they are
	// not rate limited. nil: loopback and the networks of the interfaces
	// the server listens on (every interface when it listens on all).
	Allow []netip.Prefix
}

func (l Limits) withDefaults() Limits {
	if l.MaxUDPSize <= 0 {
		l.MaxUDPSize = DefaultMaxUDPSize
	}
	l.MaxUDPSize = max(l.MaxUDPSize, miekg.MinMsgSize)
	if l.RRLRate == 0 {
		l.RRLRate = DefaultRRLRate
	}
	if l.RRLSlip == 0 {
		l.RRLSlip = DefaultRRLSlip
	}
	if l.MaxTCPConns <= 0 {
		l.MaxTCPConns = DefaultMaxTCPConns
	}
	if l.MaxForwards <= 0 {
		l.MaxForwards = DefaultMaxForwards
	}
	return l
}

// defaultAllow is loopback plus the networks a server bound to ip serves:
// those of the interface that carries ip, or of every interface when ip
// is unspecified. The tasks of a VPC subnet, or of a private bridge, are
// the clients of a mesh's DNS; a client off those networks is not.
// Called where the server's sockets are (its network namespace).
func defaultAllow(ip netip.Addr) ([]netip.Prefix, error) {
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	ip = ip.Unmap()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses for the default --dns-allow: %w", err)
	}
	found := false
	for _, a := range addrs {
		p, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		addr, ok := netip.AddrFromSlice(p.IP)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		if !ip.IsUnspecified() && addr != ip {
			continue
		}
		ones, _ := p.Mask.Size()
		allow = append(allow, netip.PrefixFrom(addr, ones).Masked())
		found = true
	}
	if !found && !ip.IsUnspecified() {
		// An address no interface carries (yet): itself.
		allow = append(allow, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return allow, nil
}

// allowed reports whether addr may use the upstreams.
func (s *Server) allowed(addr net.Addr) bool {
	ip := addrIP(addr)
	for _, p := range s.limits.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func addrIP(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap()
}

// dnsMetrics are the DNS server's series (weft_dns_*).
type dnsMetrics struct {
	limited   *prometheus.CounterVec // by action: drop, slip
	refused   prometheus.Counter
	truncated prometheus.Counter
	// forwardsFull counts the queries answered SERVFAIL because
	// MaxForwards were in flight.
	forwardsFull prometheus.Counter
}

func newDNSMetrics(reg prometheus.Registerer) *dnsMetrics {
	m := &dnsMetrics{
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "dns", Name: "rate_limited_total",
			Help: "UDP responses over a client subnet's rate: dropped, or sent empty with TC=1 (slip).",
		}, []string{"action"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "dns", Name: "forward_refused_total",
			Help: "Queries for names outside Cloud Map's zones REFUSED because the client is not in --dns-allow.",
		}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "dns", Name: "truncated_total",
			Help: "UDP answers truncated (TC=1) to the client's EDNS buffer, 512 bytes without EDNS, or --dns-max-udp-size.",
		}),
		forwardsFull: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "dns", Name: "forwards_full_total",
			Help: "Queries answered SERVFAIL without asking the upstreams, because --dns-max-forwards queries were forwarded already.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.limited, m.refused, m.truncated, m.forwardsFull)
	}
	return m
}

// minimalANY keeps one RRset of an answer to ANY (RFC 8482): over UDP, an
// ANY query would otherwise get every record of a name for a few bytes.
func minimalANY(m *miekg.Msg) {
	if len(m.Answer) == 0 {
		return
	}
	t := m.Answer[0].Header().Rrtype
	kept := m.Answer[:0]
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == t {
			kept = append(kept, rr)
		}
	}
	m.Answer = kept
	if t != miekg.TypeSRV {
		m.Extra = nil // the glue is for SRV targets only
	}
}
