package listener

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Match is a compiled FilterChainMatch.
type Match struct {
	DstPort     uint32         // 0: any
	DstPrefixes []netip.Prefix // empty: any
	ServerNames []string       // lower-case; "*.x" wildcards; empty: any
	Transport   string         // "", "raw_buffer" or "tls"
	SrcType     listenerv3.FilterChainMatch_ConnectionSourceType
	SrcPrefixes []netip.Prefix
	DirectSrc   []netip.Prefix
	SrcPorts    []uint32
}

// NeedsTLSInspection reports whether matching needs the ClientHello.
func (m *Match) NeedsTLSInspection() bool { return len(m.ServerNames) > 0 || m.Transport != "" }

// CompileMatch compiles a FilterChainMatch (nil matches everything).
func CompileMatch(fm *listenerv3.FilterChainMatch, path string) (Match, error) {
	var m Match
	if fm == nil {
		return m, nil
	}
	if err := strict.Fields(fm, path, "destination_port", "prefix_ranges", "server_names",
		"transport_protocol", "source_type", "source_prefix_ranges", "direct_source_prefix_ranges",
		"source_ports"); err != nil {
		return m, err
	}
	m.DstPort = fm.GetDestinationPort().GetValue()
	var err error
	if m.DstPrefixes, err = prefixes(fm.GetPrefixRanges(), path+".prefix_ranges"); err != nil {
		return m, err
	}
	if m.SrcPrefixes, err = prefixes(fm.GetSourcePrefixRanges(), path+".source_prefix_ranges"); err != nil {
		return m, err
	}
	if m.DirectSrc, err = prefixes(fm.GetDirectSourcePrefixRanges(), path+".direct_source_prefix_ranges"); err != nil {
		return m, err
	}
	for _, s := range fm.GetServerNames() {
		m.ServerNames = append(m.ServerNames, lowerSNI(s))
	}
	switch t := fm.GetTransportProtocol(); t {
	case "", "raw_buffer", "tls":
		m.Transport = t
	default:
		return m, strict.Value(path, "transport_protocol", t, "raw_buffer or tls only")
	}
	m.SrcType = fm.GetSourceType()
	m.SrcPorts = fm.GetSourcePorts()
	return m, nil
}

func prefixes(rs []*corev3.CidrRange, path string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", path, i, err)
		}
		bits := a.BitLen()
		if r.GetPrefixLen() != nil {
			bits = int(r.GetPrefixLen().GetValue())
		}
		p, err := a.Unmap().Prefix(min(bits, a.Unmap().BitLen()))
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", path, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// lowerSNI is a server name as weft keeps it, an SNI or a filter chain's
// server_names: ASCII letters made lower case, every other byte as it is,
// as Envoy's ConnectionSocketImpl::setRequestedServerName
// (absl::AsciiStrToLower). strings.ToLower would also map non-ASCII
// letters (the Kelvin sign to "k") and make an invalid UTF-8 byte three.
func lowerSNI(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ConnInfo is what filter chain matching looks at.
type ConnInfo struct {
	Dst, Src   netip.AddrPort // Dst after original-destination recovery
	DirectSrc  netip.AddrPort
	ServerName string // SNI, lower-case, "" when none
	TLS        bool
}

// Select picks the filter chain for a connection the way Envoy does: at
// each criterion in turn (destination port, destination IP, server name,
// transport protocol, direct source IP, source type, source IP, source
// port) only the most specific candidates survive, and a chain that leaves
// a criterion empty survives only when no chain matched it specifically.
// There is no backtracking. It returns -1 when nothing matches.
func Select(ms []Match, ci ConnInfo) int {
	cand := make([]int, 0, len(ms))
	for i := range ms {
		cand = append(cand, i)
	}
	narrow := func(score func(m *Match) int) {
		// score: -1 does not match, 0 matches as "any", >0 specific.
		best := -1
		for _, i := range cand {
			if s := score(&ms[i]); s > best {
				best = s
			}
		}
		out := cand[:0]
		if best >= 0 {
			for _, i := range cand {
				if score(&ms[i]) == best {
					out = append(out, i)
				}
			}
		}
		cand = out
	}
	narrow(func(m *Match) int {
		switch m.DstPort {
		case 0:
			return 0
		case uint32(ci.Dst.Port()):
			return 1
		}
		return -1
	})
	narrow(func(m *Match) int { return prefixScore(m.DstPrefixes, ci.Dst.Addr()) })
	narrow(func(m *Match) int {
		if len(m.ServerNames) == 0 {
			return 0
		}
		best := -1
		for _, n := range m.ServerNames {
			switch {
			case n == ci.ServerName && n != "":
				return 1 << 20
			case strings.HasPrefix(n, "*") && ci.ServerName != "" && strings.HasSuffix(ci.ServerName, n[1:]):
				best = max(best, len(n))
			}
		}
		return best
	})
	narrow(func(m *Match) int {
		switch {
		case m.Transport == "":
			return 0
		case m.Transport == "tls" && ci.TLS, m.Transport == "raw_buffer" && !ci.TLS:
			return 1
		}
		return -1
	})
	narrow(func(m *Match) int { return prefixScore(m.DirectSrc, ci.DirectSrc.Addr()) })
	narrow(func(m *Match) int {
		local := ci.Src.Addr().IsLoopback() || ci.Src.Addr() == ci.Dst.Addr()
		switch m.SrcType {
		case listenerv3.FilterChainMatch_ANY:
			return 0
		case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
			if local {
				return 1
			}
		case listenerv3.FilterChainMatch_EXTERNAL:
			if !local {
				return 1
			}
		}
		return -1
	})
	narrow(func(m *Match) int { return prefixScore(m.SrcPrefixes, ci.Src.Addr()) })
	narrow(func(m *Match) int {
		if len(m.SrcPorts) == 0 {
			return 0
		}
		for _, p := range m.SrcPorts {
			if p == uint32(ci.Src.Port()) {
				return 1
			}
		}
		return -1
	})
	if len(cand) == 0 {
		return -1
	}
	return cand[0]
}

// prefixScore is 0 for "any", 1+prefix length for the longest containing
// prefix, -1 when none contains a.
func prefixScore(ps []netip.Prefix, a netip.Addr) int {
	if len(ps) == 0 {
		return 0
	}
	a = a.Unmap()
	best := -1
	for _, p := range ps {
		if p.Contains(a) && p.Bits()+1 > best {
			best = p.Bits() + 1
		}
	}
	return best
}
