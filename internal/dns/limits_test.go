package dns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/netns/netnstest"
)

// bigServices register the largest answers a namespace can give for
// the shortest queries: s.a (SRV, with both addresses of each target as
// glue) and d.a (A and AAAA), each with 40 instances with ids of the
// longest DNS label (63 bytes).
func bigServices(w *weft) {
	nsID := w.namespace("a", 0)
	for name, types := range map[string][]cloudmap.RecordType{
		"s": {cloudmap.RecordTypeSrv},
		"d": {cloudmap.RecordTypeA, cloudmap.RecordTypeAaaa},
	} {
		svc := w.service(nsID, name, cloudmap.RoutingPolicyMultivalue, false, types...)
		for i := range 40 {
			w.register(svc, fmt.Sprintf("task-%02d-%s", i, strings.Repeat("0123456789abcdef", 4)[:55]), map[string]string{
				cloudmap.AttrIPv4: fmt.Sprintf("10.9.0.%d", i+1),
				cloudmap.AttrIPv6: fmt.Sprintf("fd00::9:%x", i+1),
				cloudmap.AttrPort: "8080",
			})
		}
	}
	w.sync()
}

// exchange sends q over conn and returns the answer and the sizes of both
// on the wire.
func exchange(t *testing.T, network, addr string, q *miekg.Msg) (*miekg.Msg, int, int) {
	t.Helper()
	conn, err := miekg.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	raw := buf[:n]
	r := new(miekg.Msg)
	if err := r.Unpack(raw); err != nil {
		t.Fatal(err)
	}
	return r, len(wire), len(raw)
}

// TestAmplification measures answer bytes per query byte over UDP for the
// largest answers: with EDNS they stay within DefaultMaxUDPSize whatever
// buffer the client advertises (they reached 56 times the query), without
// it within 512 bytes; truncated answers say so, and TCP gets them whole.
func TestAmplification(t *testing.T) {
	w := start(t, filepath.Join(t.TempDir(), "weft.db"), dns.Config{})
	bigServices(w)
	for _, tc := range []struct {
		name  string
		qtype uint16
		edns  uint16 // 0: none
		max   int
	}{
		{"s", miekg.TypeANY, 65535, dns.DefaultMaxUDPSize},
		{"s", miekg.TypeSRV, 65535, dns.DefaultMaxUDPSize},
		{"d", miekg.TypeANY, 65535, dns.DefaultMaxUDPSize},
		{"d", miekg.TypeA, 65535, dns.DefaultMaxUDPSize},
		{"s", miekg.TypeANY, 0, miekg.MinMsgSize},
		{"s", miekg.TypeSRV, 0, miekg.MinMsgSize},
	} {
		q := new(miekg.Msg)
		q.SetQuestion(tc.name+".a.", tc.qtype)
		if tc.edns > 0 {
			q.SetEdns0(tc.edns, false)
		}
		r, qn, rn := exchange(t, "udp", w.dns.Addr(), q)
		what := fmt.Sprintf("%s %s EDNS %d", tc.name, miekg.TypeToString[tc.qtype], tc.edns)
		t.Logf("%s: %d-byte query, %d-byte answer (%d records, TC %v): %.1fx", what, qn, rn, len(r.Answer)+len(r.Extra), r.Truncated, float64(rn)/float64(qn))
		if rn > tc.max {
			t.Errorf("%s: %d-byte answer over UDP, want at most %d", what, rn, tc.max)
		}
		if r.Rcode != miekg.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s: rcode %s, %d answers", what, miekg.RcodeToString[r.Rcode], len(r.Answer))
		}
		if tc.qtype == miekg.TypeSRV && tc.edns == 0 && !r.Truncated {
			t.Errorf("%s: 8 SRV records and their addresses fit in %d bytes without TC", what, rn)
		}
		if tc.qtype == miekg.TypeANY && tc.name == "d" && len(r.Answer) > 8 {
			t.Errorf("%s: %d records, want one RRset (RFC 8482)", what, len(r.Answer))
		}
	}
	q := new(miekg.Msg)
	q.SetQuestion("s.a.", miekg.TypeSRV)
	r, _, _ := exchange(t, "tcp", w.dns.Addr(), q)
	if r.Truncated || len(r.Answer) != 8 || len(r.Extra) != 16 {
		t.Errorf("SRV over TCP: TC %v, %d answers, %d extra; want 8 and 16", r.Truncated, len(r.Answer), len(r.Extra))
	}
}

// labFamily names what this package's network-namespace tests create.
const labFamily = "wfdn"

// TestLimitsFromAnotherHost runs the server in a network namespace and
// queries it from another one, as a client elsewhere on the network would:
// forwarding only for --dns-allow, and response rate limiting per subnet.
func TestLimitsFromAnotherHost(t *testing.T) {
	netnstest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if removed, err := netns.Sweep(ctx, labFamily); err != nil || len(removed) > 0 {
		t.Logf("swept leftovers of an earlier run: %v (err %v)", removed, err)
	}
	lab, err := netns.New(ctx, labFamily, netip.MustParsePrefix("10.251.211.0/24"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	srv, err := lab.AddHost(ctx, "srv", netip.MustParseAddr("10.251.211.10"), netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := lab.AddHost(ctx, "cli", netip.MustParseAddr("10.251.211.20"), netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// startIn starts a DNS server listening on every address of srv.
	startIn := func(t *testing.T, cfg dns.Config) (*weft, string) {
		w := startWith(t, filepath.Join(t.TempDir(), "weft.db"), func() (s *dns.Server, err error) {
			err = srv.Do(func() (err error) {
				s, err = dns.Listen("0.0.0.0:0", cfg, quiet)
				return err
			})
			return s, err
		})
		_, port, _ := net.SplitHostPort(w.dns.Addr())
		return w, port
	}
	// dial opens a connection from inside host h.
	dial := func(t *testing.T, h *netns.Host, network, addr string) *miekg.Conn {
		var c net.Conn
		if err := h.Do(func() (err error) {
			c, err = net.Dial(network, addr)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &miekg.Conn{Conn: c}
	}
	ask := func(t *testing.T, c *miekg.Conn, name string) *miekg.Msg {
		t.Helper()
		q := new(miekg.Msg)
		q.SetQuestion(name, miekg.TypeA)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := c.ReadMsg()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}

	t.Run("forwarding", func(t *testing.T) {
		// The server's upstream exchanges start on any thread, in this
		// process's own namespace: the upstream listens there.
		upstream := startUpstream(t)
		reg := prometheus.NewRegistry()
		// --dns-allow narrowed to the server's own host: the client on
		// its network is outside.
		narrow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.PrefixFrom(srv.Addr, 32)}
		w, port := startIn(t, dns.Config{Upstreams: []string{upstream}, Registry: reg, Limits: dns.Limits{Allow: narrow}})
		nsID := w.namespace("fwd.local", 0)
		web := w.service(nsID, "web", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
		w.register(web, "a", map[string]string{cloudmap.AttrIPv4: "10.8.0.1"})
		w.sync()
		remote := netip.AddrPortFrom(srv.Addr, mustPort(t, port)).String()

		outside := dial(t, cli, "udp", remote)
		if r := ask(t, outside, "example.com."); r.Rcode != miekg.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("a client outside --dns-allow got %s with %d answers, want REFUSED", miekg.RcodeToString[r.Rcode], len(r.Answer))
		}
		if r := ask(t, outside, "web.fwd.local."); r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("the zone's own answer to a client outside --dns-allow: %s", r)
		}
		if n := metric(t, reg, "weft_dns_forward_refused_total", ""); n != 1 {
			t.Errorf("weft_dns_forward_refused_total = %v, want 1", n)
		}
		for _, addr := range []string{"127.0.0.1:" + port, remote} {
			if r := ask(t, dial(t, srv, "udp", addr), "example.com."); r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("a client on the server's host (%s) got %s, want the upstream's answer", addr, miekg.RcodeToString[r.Rcode])
			}
		}

		// By default the networks the server listens on are its
		// clients: the lab's other host is forwarded for.
		_, port2 := startIn(t, dns.Config{Upstreams: []string{upstream}})
		c := dial(t, cli, "udp", netip.AddrPortFrom(srv.Addr, mustPort(t, port2)).String())
		if r := ask(t, c, "example.com."); r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("a client on the server's network got %s by default, want the upstream's answer", miekg.RcodeToString[r.Rcode])
		}
		// An operator's --dns-allow names another network.
		_, port3 := startIn(t, dns.Config{Upstreams: []string{upstream}, Limits: dns.Limits{Allow: []netip.Prefix{netip.MustParsePrefix("10.251.211.0/24")}}})
		c = dial(t, cli, "tcp", netip.AddrPortFrom(srv.Addr, mustPort(t, port3)).String())
		if r := ask(t, c, "example.com."); r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("a client in --dns-allow got %s, want the upstream's answer", miekg.RcodeToString[r.Rcode])
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		const rate, queries = 10, 200
		reg := prometheus.NewRegistry()
		// The client is off the allowed networks, as a reflector's
		// victim would be; the mesh's own clients are not limited.
		off := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		w, port := startIn(t, dns.Config{Registry: reg, Limits: dns.Limits{RRLRate: rate, RRLSlip: 2, Allow: off}})
		nsID := w.namespace("rrl.local", 0)
		web := w.service(nsID, "web", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
		w.register(web, "a", map[string]string{cloudmap.AttrIPv4: "10.8.0.1"})
		w.sync()
		remote := netip.AddrPortFrom(srv.Addr, mustPort(t, port)).String()

		c := dial(t, cli, "udp", remote)
		began := time.Now()
		for i := range queries {
			q := new(miekg.Msg)
			q.SetQuestion("web.rrl.local.", miekg.TypeA)
			q.Id = uint16(i)
			if err := c.WriteMsg(q); err != nil {
				t.Fatal(err)
			}
		}
		sent := time.Since(began)
		answered, slipped := 0, 0
		for {
			// Limited responses never come: read until the server
			// has been quiet for a second.
			c.SetReadDeadline(time.Now().Add(time.Second))
			r, err := c.ReadMsg()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Truncated {
				slipped++
			} else if len(r.Answer) == 1 {
				answered++
			}
		}
		// The bucket holds one second's worth and refills while the
		// queries are sent.
		allowed := rate + int(float64(rate)*sent.Seconds()) + 1
		t.Logf("%d queries in %v: %d answered, %d slipped (TC=1), %d dropped", queries, sent, answered, slipped, queries-answered-slipped)
		if answered > allowed || answered == 0 {
			t.Errorf("%d answered, want 1 to %d", answered, allowed)
		}
		if slipped == 0 || answered+slipped >= queries {
			t.Errorf("%d slipped and %d answered of %d: want some of each limited kind", slipped, answered, queries)
		}
		drops := metric(t, reg, "weft_dns_rate_limited_total", "drop")
		slips := metric(t, reg, "weft_dns_rate_limited_total", "slip")
		if int(slips) != slipped || int(drops+slips) != queries-answered {
			t.Errorf("counted %v drops and %v slips; saw %d slips of %d limited", drops, slips, slipped, queries-answered)
		}
		// TCP and loopback clients are not limited.
		if r := ask(t, dial(t, cli, "tcp", remote), "web.rrl.local."); len(r.Answer) != 1 || r.Truncated {
			t.Errorf("over TCP after the limit: %s", r)
		}
		local := dial(t, srv, "udp", "127.0.0.1:"+port)
		for range queries {
			if r := ask(t, local, "web.rrl.local."); len(r.Answer) != 1 || r.Truncated {
				t.Fatalf("a loopback client was limited: %s", r)
			}
		}
	})
}

func mustPort(t *testing.T, s string) uint16 {
	t.Helper()
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(p)
}

// metric sums the values of a counter of reg whose first label is label
// ("": any).
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// TestTCPConnectionCap: with the TCP connections at the cap, another
// client is not served until one of them closes.
func TestTCPConnectionCap(t *testing.T) {
	w := start(t, filepath.Join(t.TempDir(), "weft.db"), dns.Config{Limits: dns.Limits{MaxTCPConns: 2}})
	nsID := w.namespace("tcp.local", 0)
	web := w.service(nsID, "web", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
	w.register(web, "a", map[string]string{cloudmap.AttrIPv4: "10.8.0.1"})
	w.sync()
	ask := func(c *miekg.Conn, patience time.Duration) error {
		q := new(miekg.Msg)
		q.SetQuestion("web.tcp.local.", miekg.TypeA)
		c.SetDeadline(time.Now().Add(patience))
		if err := c.WriteMsg(q); err != nil {
			return err
		}
		_, err := c.ReadMsg()
		return err
	}
	var held []*miekg.Conn
	for range 2 {
		c, err := miekg.Dial("tcp", w.dns.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra, err := miekg.Dial("tcp", w.dns.Addr()) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := ask(extra, 300*time.Millisecond); err == nil {
		t.Fatal("a third TCP connection was served with two open and a cap of two")
	}
	held[0].Close()
	extra.Close()
	again, err := miekg.Dial("tcp", w.dns.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := ask(again, 10*time.Second); err != nil {
		t.Fatalf("once a connection closed: %v", err)
	}
}

// TestForwardCap: the queries forwarded to the upstreams at once are
// capped; beyond, a query is answered SERVFAIL at once rather than held.
// Each forward holds a goroutine and a socket for the upstream's timeout,
// and the mesh's own clients are not rate limited: 5,000 queries to an
// upstream that never answers held 2,600 sockets before the cap.
func TestForwardCap(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	const capacity, queries = 8, 20
	reg := prometheus.NewRegistry()
	w := start(t, filepath.Join(t.TempDir(), "weft.db"), dns.Config{Upstreams: []string{hole.LocalAddr().String()},
		UpstreamTimeout: 3 * time.Second, Limits: dns.Limits{MaxForwards: capacity}, Registry: reg})
	type answer struct {
		rcode int
		err   error
	}
	answers := make(chan answer, queries)
	for i := range queries {
		go func() { // one query; ends with its answer or the client's timeout
			q := new(miekg.Msg)
			q.SetQuestion(fmt.Sprintf("q%d.example.com.", i), miekg.TypeA)
			c := &miekg.Client{Net: "udp", Timeout: time.Second}
			r, _, err := c.Exchange(q, w.dns.Addr())
			if err != nil {
				answers <- answer{err: err}
				return
			}
			answers <- answer{rcode: r.Rcode}
		}()
	}
	failed, unanswered := 0, 0
	for range queries {
		a := <-answers
		switch {
		case a.err != nil:
			unanswered++ // forwarded: waits for the upstream's 3 s
		case a.rcode == miekg.RcodeServerFailure:
			failed++
		default:
			t.Errorf("rcode %s from a black-holed upstream", miekg.RcodeToString[a.rcode])
		}
	}
	if unanswered != capacity || failed != queries-capacity {
		t.Fatalf("%d of %d queries forwarded (no answer yet), %d SERVFAIL at once; want %d forwarded with a cap of %d",
			unanswered, queries, failed, capacity, capacity)
	}
	if n := metric(t, reg, "weft_dns_forwards_full_total", ""); n != queries-capacity {
		t.Errorf("weft_dns_forwards_full_total %v, want %d", n, queries-capacity)
	}
}
