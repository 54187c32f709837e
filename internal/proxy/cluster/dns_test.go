package cluster

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// dnsAnswer is what a test's DNS server answers every A query with: an
// rcode and the addresses (none: an answer without records).
type dnsAnswer struct {
	rcode int
	ips   []net.IP
}

// testDNS is a DNS server on loopback UDP whose answer the test sets,
// and a resolver that asks it and nothing else.
type testDNS struct {
	mu     sync.Mutex
	answer dnsAnswer // guarded by mu
	r      *net.Resolver
}

func (d *testDNS) set(a dnsAnswer) {
	d.mu.Lock()
	d.answer = a
	d.mu.Unlock()
}

func startDNS(t *testing.T) *testDNS {
	t.Helper()
	d := &testDNS{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		d.mu.Lock()
		a := d.answer
		d.mu.Unlock()
		m := new(dns.Msg)
		m.SetRcode(req, a.rcode)
		m.RecursionAvailable = true // as the resolver a host asks (Go's takes an empty answer without it for a lame referral)
		if q := req.Question[0]; q.Qtype == dns.TypeA {
			for _, ip := range a.ips {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: ip})
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go func() { _ = s.ActivateAndServe() }() // ends with Shutdown in Cleanup
	<-started
	t.Cleanup(func() { _ = s.Shutdown() })
	addr := pc.LocalAddr().String()
	d.r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", addr)
	}}
	return d
}

// TestDNSAnswerWithoutAddresses: an answer without addresses (NOERROR
// with no A record, or NXDOMAIN) empties a STRICT_DNS cluster and leaves
// a LOGICAL_DNS cluster's host, as Envoy's strict and logical DNS
// clusters take the c-ares resolver's "success, no records"; a failed
// resolution (SERVFAIL) keeps the hosts of both. A later answer with an
// address is taken by both. weft proxy kept a STRICT_DNS cluster's hosts
// on an empty answer (Go's resolver reports it as an error).
func TestDNSAnswerWithoutAddresses(t *testing.T) {
	first := dnsAnswer{dns.RcodeSuccess, []net.IP{net.IPv4(127, 0, 0, 7)}}
	later := dnsAnswer{dns.RcodeSuccess, []net.IP{net.IPv4(127, 0, 0, 8)}}
	for _, tc := range []struct {
		name   string
		typ    clusterv3.Cluster_DiscoveryType
		answer dnsAnswer
		want   []string // the hosts after answer
	}{
		{"strict, no records", clusterv3.Cluster_STRICT_DNS, dnsAnswer{dns.RcodeSuccess, nil}, nil},
		{"strict, NXDOMAIN", clusterv3.Cluster_STRICT_DNS, dnsAnswer{dns.RcodeNameError, nil}, nil},
		{"strict, SERVFAIL", clusterv3.Cluster_STRICT_DNS, dnsAnswer{dns.RcodeServerFailure, nil}, []string{"127.0.0.7:80"}},
		{"logical, no records", clusterv3.Cluster_LOGICAL_DNS, dnsAnswer{dns.RcodeSuccess, nil}, []string{"127.0.0.7:80"}},
		{"logical, NXDOMAIN", clusterv3.Cluster_LOGICAL_DNS, dnsAnswer{dns.RcodeNameError, nil}, []string{"127.0.0.7:80"}},
		{"logical, SERVFAIL", clusterv3.Cluster_LOGICAL_DNS, dnsAnswer{dns.RcodeServerFailure, nil}, []string{"127.0.0.7:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDNS(t)
			pb := &clusterv3.Cluster{Name: "d", ConnectTimeout: durationpb.New(time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: tc.typ},
				LoadAssignment:       assignmentOf("d", "backend.weft.test.:80"),
				DnsLookupFamily:      clusterv3.Cluster_V4_ONLY}
			// Not started: each resolution below is the test's.
			c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.halt)
			c.resolver = d.r
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			hosts := func() []string {
				var addrs []string
				for _, h := range c.Hosts() {
					addrs = append(addrs, h.Addr)
				}
				return addrs
			}
			d.set(first)
			c.resolveOnce(ctx)
			if got := hosts(); !slices.Equal(got, []string{"127.0.0.7:80"}) {
				t.Fatalf("after the first answer: hosts %v, want [127.0.0.7:80]", got)
			}
			d.set(tc.answer)
			c.resolveOnce(ctx)
			if got := hosts(); !slices.Equal(got, tc.want) {
				t.Errorf("after rcode %s with %d addresses: hosts %v, want %v", dns.RcodeToString[tc.answer.rcode], len(tc.answer.ips), got, tc.want)
			}
			d.set(later)
			c.resolveOnce(ctx)
			if got := hosts(); !slices.Equal(got, []string{"127.0.0.8:80"}) {
				t.Errorf("after a new address: hosts %v, want [127.0.0.8:80]", got)
			}
		})
	}
}
