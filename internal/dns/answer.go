package dns

import (
	"math/rand/v2"
	"net"
	"strings"

	miekg "github.com/miekg/dns"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
)

// maxMultivalue is how many records a MULTIVALUE service answers with, as
// Route 53's multivalue answer routing does.
const maxMultivalue = 8

// SOA timers of the zones: Route 53's defaults.
const (
	soaRefresh = 7200
	soaRetry   = 900
	soaExpire  = 1209600
)

// answer builds the authoritative reply to req from ix, or returns nil
// when the question is outside every zone (the caller forwards it or
// refuses). shuffle reorders records so that load spreads; tests pass a
// deterministic one.
func answer(ix *discovery.Index, req *miekg.Msg, shuffle func(n int, swap func(i, j int))) *miekg.Msg {
	q := req.Question[0]
	zone, ok := ix.Zone(q.Name)
	if !ok {
		return nil
	}
	m := new(miekg.Msg)
	m.SetReply(req)
	m.Authoritative = true
	apex := miekg.Fqdn(zone.Name)
	name := strings.ToLower(miekg.Fqdn(q.Name))
	soa := soaRecord(zone, apex, uint32(ix.Revision()))

	var rrs []miekg.RR
	exists := false
	switch {
	case name == apex:
		exists = true
		switch q.Qtype {
		case miekg.TypeSOA:
			rrs = []miekg.RR{soa}
		case miekg.TypeNS:
			rrs = []miekg.RR{nsRecord(zone, apex)}
		case miekg.TypeANY:
			rrs = []miekg.RR{soa, nsRecord(zone, apex)}
		}
	default:
		rrs, exists = serviceAnswer(ix, q, shuffle)
		if !exists {
			rrs, exists = instanceAnswer(ix, q)
		}
	}
	switch {
	case len(rrs) > 0:
		m.Answer = rrs
		m.Extra = glue(ix, rrs)
	case exists: // NODATA: the name exists, the type does not
		m.Ns = []miekg.RR{soa}
	default:
		m.Rcode = miekg.RcodeNameError
		m.Ns = []miekg.RR{soa}
	}
	return m
}

func soaRecord(zone discovery.Zone, apex string, serial uint32) *miekg.SOA {
	return &miekg.SOA{
		Hdr:     miekg.RR_Header{Name: apex, Rrtype: miekg.TypeSOA, Class: miekg.ClassINET, Ttl: zone.SOATTL},
		Ns:      "ns." + apex,
		Mbox:    "hostmaster." + apex,
		Serial:  serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  zone.SOATTL,
	}
}

func nsRecord(zone discovery.Zone, apex string) *miekg.NS {
	return &miekg.NS{Hdr: miekg.RR_Header{Name: apex, Rrtype: miekg.TypeNS, Class: miekg.ClassINET, Ttl: 172800}, Ns: "ns." + apex}
}

// serviceAnswer answers for <service>.<namespace>. exists reports whether
// the name has any record: a service without healthy instances has none,
// as in Route 53, where records come and go with instances.
func serviceAnswer(ix *discovery.Index, q miekg.Question, shuffle func(int, func(i, j int))) (rrs []miekg.RR, exists bool) {
	ref, dc, ok := ix.DNSService(q.Name)
	if !ok {
		return nil, false
	}
	eps := ix.Endpoints(ref.Namespace, ref.Service, nil)
	shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
	limit := maxMultivalue
	if dc.RoutingPolicy == cloudmap.RoutingPolicyWeighted {
		limit = 1
	}
	hdr := func(t uint16, ttl uint32) miekg.RR_Header {
		return miekg.RR_Header{Name: q.Name, Rrtype: t, Class: miekg.ClassINET, Ttl: ttl}
	}
	for _, rec := range dc.Records {
		var typed []miekg.RR
		for _, ep := range eps {
			var rr miekg.RR
			switch rec.Type {
			case cloudmap.RecordTypeA:
				if ep.IPv4 != "" {
					rr = &miekg.A{Hdr: hdr(miekg.TypeA, rec.TTL), A: net.ParseIP(ep.IPv4).To4()}
				}
			case cloudmap.RecordTypeAaaa:
				if ep.IPv6 != "" {
					rr = &miekg.AAAA{Hdr: hdr(miekg.TypeAAAA, rec.TTL), AAAA: net.ParseIP(ep.IPv6)}
				}
			case cloudmap.RecordTypeSrv:
				if ep.IPv4 != "" || ep.IPv6 != "" {
					target := miekg.Fqdn(strings.ToLower(ep.InstanceID + "." + ref.Service + "." + ref.Namespace))
					rr = &miekg.SRV{Hdr: hdr(miekg.TypeSRV, rec.TTL), Priority: 1, Weight: 1, Port: uint16(ep.Port), Target: target}
				}
			case cloudmap.RecordTypeCname:
				if c := ep.Attributes[cloudmap.AttrCNAME]; c != "" {
					rr = &miekg.CNAME{Hdr: hdr(miekg.TypeCNAME, rec.TTL), Target: miekg.Fqdn(c)}
				}
			}
			if rr != nil && len(typed) < limit {
				typed = append(typed, rr)
			}
		}
		if len(typed) == 0 {
			continue
		}
		exists = true
		rtype := typed[0].Header().Rrtype
		// A CNAME answers every type, as in any zone.
		if q.Qtype == rtype || q.Qtype == miekg.TypeANY || rtype == miekg.TypeCNAME {
			rrs = append(rrs, typed...)
		}
	}
	return rrs, exists
}

// instanceAnswer answers for <instance-id>.<service>.<namespace>, the
// target of a service's SRV records, with the instance's addresses.
func instanceAnswer(ix *discovery.Index, q miekg.Question) (rrs []miekg.RR, exists bool) {
	inst, svcName, ok := strings.Cut(q.Name, ".")
	if !ok {
		return nil, false
	}
	ref, dc, ok := ix.DNSService(svcName)
	if !ok || !hasType(dc, cloudmap.RecordTypeSrv) {
		return nil, false
	}
	ttl := uint32(0)
	for _, r := range dc.Records {
		ttl = r.TTL
	}
	for _, ep := range ix.Endpoints(ref.Namespace, ref.Service, nil) {
		if !strings.EqualFold(ep.InstanceID, inst) {
			continue
		}
		exists = true
		hdr := miekg.RR_Header{Name: q.Name, Class: miekg.ClassINET, Ttl: ttl}
		if ep.IPv4 != "" && (q.Qtype == miekg.TypeA || q.Qtype == miekg.TypeANY) {
			hdr.Rrtype = miekg.TypeA
			rrs = append(rrs, &miekg.A{Hdr: hdr, A: net.ParseIP(ep.IPv4).To4()})
		}
		if ep.IPv6 != "" && (q.Qtype == miekg.TypeAAAA || q.Qtype == miekg.TypeANY) {
			hdr.Rrtype = miekg.TypeAAAA
			rrs = append(rrs, &miekg.AAAA{Hdr: hdr, AAAA: net.ParseIP(ep.IPv6)})
		}
	}
	return rrs, exists
}

func hasType(dc discovery.DNSConfig, t cloudmap.RecordType) bool {
	for _, r := range dc.Records {
		if r.Type == t {
			return true
		}
	}
	return false
}

// glue returns the addresses of the SRV targets in rrs, so clients need
// no second query.
func glue(ix *discovery.Index, rrs []miekg.RR) []miekg.RR {
	var extra []miekg.RR
	for _, rr := range rrs {
		srv, ok := rr.(*miekg.SRV)
		if !ok {
			continue
		}
		for _, t := range []uint16{miekg.TypeA, miekg.TypeAAAA} {
			a, _ := instanceAnswer(ix, miekg.Question{Name: srv.Target, Qtype: t, Qclass: miekg.ClassINET})
			extra = append(extra, a...)
		}
	}
	return extra
}

// randomShuffle is the production shuffle.
func randomShuffle(n int, swap func(i, j int)) { rand.Shuffle(n, swap) }
