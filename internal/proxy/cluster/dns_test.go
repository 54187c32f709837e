package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// dnsAnswer is what a test's DNS server answers one question with: an
// rcode and the addresses (none: an answer without records), after
// delay.
type dnsAnswer struct {
	rcode int
	ips   []net.IP
	delay time.Duration
}

// late is a, answered after the other family's answer (a SERVFAIL, which
// Go's resolver asks twice, takes two round trips on loopback).
func late(a dnsAnswer) dnsAnswer {
	a.delay = 50 * time.Millisecond
	return a
}

var (
	servfail = dnsAnswer{rcode: dns.RcodeServerFailure}
	nxdomain = dnsAnswer{rcode: dns.RcodeNameError}
	noRecord = dnsAnswer{rcode: dns.RcodeSuccess}
)

func answerOf(ips ...string) dnsAnswer {
	a := dnsAnswer{rcode: dns.RcodeSuccess}
	for _, ip := range ips {
		a.ips = append(a.ips, net.ParseIP(ip))
	}
	return a
}

type dnsQuestion struct {
	name  string // fully qualified
	qtype uint16 // dns.TypeA or dns.TypeAAAA
}

// testDNS is a DNS server on loopback UDP whose answers the test sets,
// and a resolver that asks it and nothing else.
type testDNS struct {
	mu      sync.Mutex
	answers map[dnsQuestion]dnsAnswer // guarded by mu; a question not in it is answered SERVFAIL
	r       *net.Resolver
}

// set makes the server answer name's A (a4) and AAAA (a6) questions.
func (d *testDNS) set(name string, a4, a6 dnsAnswer) {
	d.mu.Lock()
	d.answers[dnsQuestion{name, dns.TypeA}] = a4
	d.answers[dnsQuestion{name, dns.TypeAAAA}] = a6
	d.mu.Unlock()
}

func startDNS(t *testing.T) *testDNS {
	t.Helper()
	d := &testDNS{answers: map[dnsQuestion]dnsAnswer{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		d.mu.Lock()
		a, ok := d.answers[dnsQuestion{strings.ToLower(q.Name), q.Qtype}]
		d.mu.Unlock()
		if !ok {
			a = servfail
		}
		time.Sleep(a.delay) // each request has its own goroutine in dns.Server
		m := new(dns.Msg)
		m.SetRcode(req, a.rcode)
		m.RecursionAvailable = true // as the resolver a host asks (Go's takes an empty answer without it for a lame referral)
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 1}
		for _, ip := range a.ips {
			switch {
			case q.Qtype == dns.TypeA && ip.To4() != nil:
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip})
			case q.Qtype == dns.TypeAAAA && ip.To4() == nil:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip})
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

// dnsTest is a DNS cluster "d" on port 80 asking a test's DNS server,
// not started: each resolution is the test's (resolve).
type dnsTest struct {
	c   *Cluster
	st  *stats.Store
	ctx context.Context
}

func newDNSTest(t *testing.T, d *testDNS, log *slog.Logger, typ clusterv3.Cluster_DiscoveryType, family clusterv3.Cluster_DnsLookupFamily, names ...string) *dnsTest {
	t.Helper()
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, net.JoinHostPort(n, "80"))
	}
	pb := &clusterv3.Cluster{Name: "d", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		LoadAssignment:       assignmentOf("d", addrs...), DnsLookupFamily: family}
	st := stats.NewStore()
	c, err := Build(pb, st, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.halt)
	c.resolver = d.r
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &dnsTest{c: c, st: st, ctx: ctx}
}

// resolve resolves every target once and returns the cluster's hosts.
func (x *dnsTest) resolve() []string {
	x.c.resolveOnce(x.ctx)
	var addrs []string
	for _, h := range x.c.Hosts() {
		addrs = append(addrs, h.Addr)
	}
	return addrs
}

// updates reads cluster d's update_attempt, update_success and
// update_failure as admin /stats prints them.
func (x *dnsTest) updates(t *testing.T) [3]int64 {
	t.Helper()
	var b bytes.Buffer
	if err := x.st.WriteText(&b, regexp.MustCompile(`^cluster\.d\.update_`), false); err != nil {
		t.Fatal(err)
	}
	var out [3]int64
	for i, name := range []string{"attempt", "success", "failure"} {
		m := regexp.MustCompile(`(?m)^cluster\.d\.update_` + name + `: (\d+)$`).FindStringSubmatch(b.String())
		if m == nil {
			t.Fatalf("/stats has no cluster.d.update_%s:\n%s", name, b.String())
		}
		out[i], _ = strconv.ParseInt(m[1], 10, 64)
	}
	return out
}

// TestDNSAnswerWithoutAddresses: an answer without addresses (NOERROR
// with no A record, or NXDOMAIN) empties a STRICT_DNS cluster and leaves
// a LOGICAL_DNS cluster's host, as Envoy's strict and logical DNS
// clusters take the c-ares resolver's "success, no records"; a failed
// resolution (SERVFAIL) keeps the hosts of both. A later answer with an
// address is taken by both. Each resolution counts update_attempt, and
// update_success or update_failure as Envoy's clusters do: an answer
// without addresses is a success for STRICT_DNS and a failure for
// LOGICAL_DNS (logical_dns_cluster.cc takes only a non-empty answer).
func TestDNSAnswerWithoutAddresses(t *testing.T) {
	const name = "backend.weft.test."
	for _, tc := range []struct {
		name    string
		typ     clusterv3.Cluster_DiscoveryType
		answer  dnsAnswer
		want    []string // the hosts after answer
		success bool     // whether answer counts update_success (else update_failure)
	}{
		{"strict, no records", clusterv3.Cluster_STRICT_DNS, noRecord, nil, true},
		{"strict, NXDOMAIN", clusterv3.Cluster_STRICT_DNS, nxdomain, nil, true},
		{"strict, SERVFAIL", clusterv3.Cluster_STRICT_DNS, servfail, []string{"127.0.0.7:80"}, false},
		{"logical, no records", clusterv3.Cluster_LOGICAL_DNS, noRecord, []string{"127.0.0.7:80"}, false},
		{"logical, NXDOMAIN", clusterv3.Cluster_LOGICAL_DNS, nxdomain, []string{"127.0.0.7:80"}, false},
		{"logical, SERVFAIL", clusterv3.Cluster_LOGICAL_DNS, servfail, []string{"127.0.0.7:80"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDNS(t)
			x := newDNSTest(t, d, slog.New(slog.DiscardHandler), tc.typ, clusterv3.Cluster_V4_ONLY, name)
			d.set(name, answerOf("127.0.0.7"), servfail)
			if got := x.resolve(); !slices.Equal(got, []string{"127.0.0.7:80"}) {
				t.Fatalf("after the first answer: hosts %v, want [127.0.0.7:80]", got)
			}
			if got := x.updates(t); got != [3]int64{1, 1, 0} {
				t.Errorf("after the first answer: update_attempt, _success, _failure %v, want [1 1 0]", got)
			}
			d.set(name, tc.answer, servfail)
			if got := x.resolve(); !slices.Equal(got, tc.want) {
				t.Errorf("after rcode %s with %d addresses: hosts %v, want %v", dns.RcodeToString[tc.answer.rcode], len(tc.answer.ips), got, tc.want)
			}
			want := [3]int64{2, 1, 1}
			if tc.success {
				want = [3]int64{2, 2, 0}
			}
			if got := x.updates(t); got != want {
				t.Errorf("after rcode %s: update_attempt, _success, _failure %v, want %v", dns.RcodeToString[tc.answer.rcode], got, want)
			}
			d.set(name, answerOf("127.0.0.8"), servfail)
			if got := x.resolve(); !slices.Equal(got, []string{"127.0.0.8:80"}) {
				t.Errorf("after a new address: hosts %v, want [127.0.0.8:80]", got)
			}
		})
	}
}

// TestDNSTargetsResolvedApart: a STRICT_DNS cluster's names are resolved
// each on its own, as Envoy's ResolveTargets (strict_dns_cluster.cc): a
// name whose resolution fails keeps its hosts while another's answer is
// taken. weft proxy stopped at the first failed name and took no answer
// of that round, an empty one included.
func TestDNSTargetsResolvedApart(t *testing.T) {
	const a, b = "a.weft.test.", "b.weft.test."
	for _, tc := range []struct {
		name       string
		ansA, ansB dnsAnswer
		want       []string
		updates    [3]int64 // update_attempt, _success, _failure of this round
	}{
		{"a NXDOMAIN, b SERVFAIL", nxdomain, servfail, []string{"127.0.0.2:80"}, [3]int64{2, 1, 1}},
		{"a SERVFAIL, b moved", servfail, answerOf("127.0.0.3"), []string{"127.0.0.1:80", "127.0.0.3:80"}, [3]int64{2, 1, 1}},
		{"a no records, b moved", noRecord, answerOf("127.0.0.3"), []string{"127.0.0.3:80"}, [3]int64{2, 2, 0}},
		{"both SERVFAIL", servfail, servfail, []string{"127.0.0.1:80", "127.0.0.2:80"}, [3]int64{2, 0, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDNS(t)
			x := newDNSTest(t, d, slog.New(slog.DiscardHandler), clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, a, b)
			d.set(a, answerOf("127.0.0.1"), noRecord)
			d.set(b, answerOf("127.0.0.2"), noRecord)
			if got := x.resolve(); !slices.Equal(got, []string{"127.0.0.1:80", "127.0.0.2:80"}) {
				t.Fatalf("after the first answers: hosts %v", got)
			}
			kept := map[string]*Host{}
			for _, h := range x.c.Hosts() {
				kept[h.Addr] = h
			}
			before := x.updates(t)
			d.set(a, tc.ansA, noRecord)
			d.set(b, tc.ansB, noRecord)
			if got := x.resolve(); !slices.Equal(got, tc.want) {
				t.Errorf("hosts %v, want %v", got, tc.want)
			}
			for _, h := range x.c.Hosts() {
				if k := kept[h.Addr]; k != nil && k != h {
					t.Errorf("host %s was replaced; a kept host keeps its state", h.Addr)
				}
			}
			after := x.updates(t)
			if got := [3]int64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}; got != tc.updates {
				t.Errorf("update_attempt, _success, _failure grew by %v, want %v", got, tc.updates)
			}
		})
	}
}

// TestDNSLookupFamily: dns_lookup_family as Envoy's c-ares resolver
// takes it (dns_impl.cc). V4_ONLY and V6_ONLY ask their family. AUTO
// asks AAAA, then A when AAAA gave no address, and V4_PREFERRED the
// other way round: the second family's answer is taken, and when neither
// gave an address the resolution completes empty if either family
// answered (NXDOMAIN, no record) and fails, keeping the hosts, only if
// both failed. ALL asks both and fails when one failed and neither gave
// an address (c-ares reports whichever came last; this is the outcome
// that does not depend on timing). weft proxy asked both families at
// once for AUTO, V4_PREFERRED and ALL, and Go's resolver reported
// the first family's error to come (on loopback): the same answers
// emptied a target or kept it as the server's timing went. Each row
// resolves several times; the "late" rows delay one family's answer.
func TestDNSLookupFamily(t *testing.T) {
	const name = "backend.weft.test."
	const (
		v4, v6   = "127.0.0.7:80", "[fd00::7]:80"
		old4     = "127.0.0.9:80"
		old6     = "[fd00::9]:80"
		attempts = 10
	)
	both := func(a4, a6 dnsAnswer) [2]dnsAnswer { return [2]dnsAnswer{a4, a6} }
	addr4, addr6 := answerOf("127.0.0.7"), answerOf("fd00::7")
	for _, tc := range []struct {
		name   string
		family clusterv3.Cluster_DnsLookupFamily
		answer [2]dnsAnswer // A, AAAA
		want   []string     // the hosts after the answer; the first answer gave each family's old address
	}{
		{"V4_ONLY", clusterv3.Cluster_V4_ONLY, both(addr4, addr6), []string{v4}},
		{"V4_ONLY, A SERVFAIL", clusterv3.Cluster_V4_ONLY, both(servfail, addr6), []string{old4}},
		{"V6_ONLY", clusterv3.Cluster_V6_ONLY, both(addr4, addr6), []string{v6}},
		{"V6_ONLY, AAAA NXDOMAIN", clusterv3.Cluster_V6_ONLY, both(addr4, nxdomain), nil},
		{"AUTO, both", clusterv3.Cluster_AUTO, both(addr4, addr6), []string{v6}},
		{"AUTO, no AAAA", clusterv3.Cluster_AUTO, both(addr4, noRecord), []string{v4}},
		{"AUTO, AAAA SERVFAIL", clusterv3.Cluster_AUTO, both(addr4, servfail), []string{v4}},
		{"AUTO, A SERVFAIL, AAAA NXDOMAIN", clusterv3.Cluster_AUTO, both(servfail, nxdomain), nil},
		{"AUTO, A SERVFAIL, AAAA NXDOMAIN late", clusterv3.Cluster_AUTO, both(servfail, late(nxdomain)), nil},
		{"AUTO, A NXDOMAIN, AAAA SERVFAIL", clusterv3.Cluster_AUTO, both(nxdomain, servfail), nil},
		{"AUTO, both SERVFAIL", clusterv3.Cluster_AUTO, both(servfail, servfail), []string{old6}},
		{"AUTO, both NXDOMAIN", clusterv3.Cluster_AUTO, both(nxdomain, nxdomain), nil},
		{"V4_PREFERRED, both", clusterv3.Cluster_V4_PREFERRED, both(addr4, addr6), []string{v4}},
		{"V4_PREFERRED, no A", clusterv3.Cluster_V4_PREFERRED, both(noRecord, addr6), []string{v6}},
		{"V4_PREFERRED, A SERVFAIL, AAAA NXDOMAIN", clusterv3.Cluster_V4_PREFERRED, both(servfail, nxdomain), nil},
		{"V4_PREFERRED, A NXDOMAIN late, AAAA SERVFAIL", clusterv3.Cluster_V4_PREFERRED, both(late(nxdomain), servfail), nil},
		{"V4_PREFERRED, both SERVFAIL", clusterv3.Cluster_V4_PREFERRED, both(servfail, servfail), []string{old4}},
		{"ALL, both", clusterv3.Cluster_ALL, both(addr4, addr6), []string{v4, v6}},
		{"ALL, A SERVFAIL", clusterv3.Cluster_ALL, both(servfail, addr6), []string{v6}},
		{"ALL, A SERVFAIL, AAAA NXDOMAIN", clusterv3.Cluster_ALL, both(servfail, nxdomain), []string{old4, old6}},
		{"ALL, A NXDOMAIN, AAAA SERVFAIL", clusterv3.Cluster_ALL, both(nxdomain, servfail), []string{old4, old6}},
		{"ALL, A SERVFAIL, AAAA NXDOMAIN late", clusterv3.Cluster_ALL, both(servfail, late(nxdomain)), []string{old4, old6}},
		{"ALL, A NXDOMAIN, no AAAA", clusterv3.Cluster_ALL, both(nxdomain, noRecord), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDNS(t)
			x := newDNSTest(t, d, slog.New(slog.DiscardHandler), clusterv3.Cluster_STRICT_DNS, tc.family, name)
			for i := range attempts {
				d.set(name, answerOf("127.0.0.9"), answerOf("fd00::9"))
				if got := x.resolve(); len(got) == 0 {
					t.Fatalf("after the first answer: no hosts")
				}
				d.set(name, tc.answer[0], tc.answer[1])
				if got := x.resolve(); !slices.Equal(got, tc.want) {
					t.Fatalf("resolution %d: hosts %v, want %v", i+1, got, tc.want)
				}
			}
		})
	}
}

// TestDNSLogOnChange: a DNS cluster logs a failed resolution or an
// answer without addresses at Warn when it begins, at Debug while it
// lasts, and the return of addresses at Info. weft proxy logged a Warn
// every dns_refresh_rate for as long as a name had no address; Envoy
// logs its resolutions at debug.
func TestDNSLogOnChange(t *testing.T) {
	const name = "backend.weft.test."
	for _, typ := range []clusterv3.Cluster_DiscoveryType{clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS} {
		t.Run(typ.String(), func(t *testing.T) {
			d := startDNS(t)
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			x := newDNSTest(t, d, log, typ, clusterv3.Cluster_V4_ONLY, name)
			var levels []string
			step := func(a dnsAnswer) {
				buf.Reset()
				d.set(name, a, servfail)
				x.resolve()
				lvl := regexp.MustCompile(`level=(\w+)`).FindStringSubmatch(buf.String())
				if lvl == nil {
					levels = append(levels, "none")
					return
				}
				levels = append(levels, lvl[1])
			}
			for _, a := range []dnsAnswer{answerOf("127.0.0.7"), nxdomain, nxdomain, nxdomain, servfail, servfail, answerOf("127.0.0.7"), answerOf("127.0.0.7")} {
				step(a)
			}
			want := "DEBUG WARN DEBUG DEBUG WARN DEBUG INFO DEBUG"
			if got := strings.Join(levels, " "); got != want {
				t.Errorf("log levels %s, want %s", got, want)
			}
		})
	}
}

// TestDNSLookupFamilyUndefined: a dns_lookup_family outside the enum is
// refused, as Envoy's proto validation refuses it.
func TestDNSLookupFamilyUndefined(t *testing.T) {
	pb := &clusterv3.Cluster{Name: "d", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		LoadAssignment:       assignmentOf("d", "backend.weft.test.:80"), DnsLookupFamily: 9}
	_, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
	if want := "cluster d: dns_lookup_family 9: value must be one of the defined enum values"; fmt.Sprint(err) != want {
		t.Errorf("Build: %v, want %s", err, want)
	}
}

// A DNS refresh rate of 1 ms or less is refused, as Envoy's proto
// validation refuses it; 0 made the resolve loop ask without pause.
func TestDNSRefreshRateBounded(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, -time.Second} {
		pb := &clusterv3.Cluster{Name: "d", ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
			LoadAssignment:       assignmentOf("d", "backend.weft.test.:80"), DnsRefreshRate: durationpb.New(d)}
		_, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
		if want := fmt.Sprintf("cluster d: dns_refresh_rate %v: value must be greater than 1ms", d); fmt.Sprint(err) != want {
			t.Errorf("Build with %v: %v, want %s", d, err, want)
		}
	}
}

// A name /etc/hosts holds without an address of the family asked is an
// answer without addresses (c-ares goes on to DNS and completes empty),
// not a failure: Go reports it as "no suitable address found". The name
// is localhost, skipped where /etc/hosts gives it an IPv6 address or none.
func TestLookupFamilyHostsWithoutTheFamily(t *testing.T) {
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Skipf("no /etc/hosts: %v", err)
	}
	var v4, v6 bool
	for _, line := range strings.Split(string(hosts), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) < 2 || !slices.Contains(f[1:], "localhost") {
			continue
		}
		if a, err := netip.ParseAddr(f[0]); err == nil {
			v4, v6 = v4 || a.Is4(), v6 || a.Is6()
		}
	}
	if !v4 || v6 {
		t.Skipf("/etc/hosts does not hold localhost with IPv4 addresses only (IPv4 %v, IPv6 %v)", v4, v6)
	}
	ips, err := lookupFamily(context.Background(), net.DefaultResolver, "ip6", "localhost")
	if err != nil || len(ips) != 0 {
		t.Errorf("lookupFamily(ip6, localhost) = %v, %v; want no addresses and no error", ips, err)
	}
}

// An address literal of the other family is an answer without addresses
// too: Go reports it as /etc/hosts' (no suitable address).
func TestLookupFamilyLiteralOfTheOtherFamily(t *testing.T) {
	ips, err := lookupFamily(context.Background(), net.DefaultResolver, "ip6", "127.0.0.1")
	if err != nil || len(ips) != 0 {
		t.Errorf("lookupFamily(ip6, 127.0.0.1) = %v, %v; want no addresses and no error", ips, err)
	}
}
