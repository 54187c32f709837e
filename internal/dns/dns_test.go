package dns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/store/bolt"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// weft is a registry and a DNS server on one store, over real sockets.
type weft struct {
	t   testing.TB
	st  *bolt.Store
	reg *cloudmap.Registry
	dns *dns.Server
	// stop ends the DNS server, then closes the store; idempotent.
	stop func()
}

func start(t testing.TB, path string, cfg dns.Config) *weft {
	t.Helper()
	return startWith(t, path, func() (*dns.Server, error) { return dns.Listen("127.0.0.1:0", cfg, quiet) })
}

// startWith is start with a server that listen opens.
func startWith(t testing.TB, path string, listen func() (*dns.Server, error)) *weft {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := listen()
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, st) }() // ends with cancel in Cleanup
	w := &weft{t: t, st: st, reg: cloudmap.NewRegistry(st, cloudmap.Config{}), dns: srv}
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("dns Run: %v", err)
			}
			st.Close()
		})
	}
	t.Cleanup(w.stop)
	w.sync()
	return w
}

// sync waits until the DNS server answers from the store as it is now.
func (w *weft) sync() {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.dns.WaitRevision(ctx, w.st.Revision()); err != nil {
		w.t.Fatalf("DNS server did not reach revision %d: %v", w.st.Revision(), err)
	}
}

func (w *weft) namespace(name string, soaTTL int64) string {
	w.t.Helper()
	in := &cloudmap.CreatePrivateDnsNamespaceRequest{Name: &name, Vpc: ptr("vpc-1")}
	if soaTTL > 0 {
		in.Properties = &cloudmap.PrivateDnsNamespaceProperties{DnsProperties: &cloudmap.PrivateDnsPropertiesMutable{SOA: &cloudmap.SOA{TTL: &soaTTL}}}
	}
	out, err := checked(context.Background(), w.reg.CreatePrivateDnsNamespace, in)
	if err != nil {
		w.t.Fatal(err)
	}
	op, err := checked(context.Background(), w.reg.GetOperation, &cloudmap.GetOperationRequest{OperationId: out.OperationId})
	if err != nil {
		w.t.Fatal(err)
	}
	return op.Operation.Targets["NAMESPACE"]
}

func (w *weft) service(nsID, name string, policy cloudmap.RoutingPolicy, custom bool, types ...cloudmap.RecordType) string {
	w.t.Helper()
	in := &cloudmap.CreateServiceRequest{Name: &name, NamespaceId: &nsID}
	if len(types) > 0 {
		in.DnsConfig = &cloudmap.DnsConfig{RoutingPolicy: policy}
		for i, typ := range types {
			in.DnsConfig.DnsRecords = append(in.DnsConfig.DnsRecords, cloudmap.DnsRecord{Type: typ, TTL: ptr(int64(60 + i))})
		}
	} else {
		in.Type = cloudmap.ServiceTypeOptionHttp
	}
	if custom {
		in.HealthCheckCustomConfig = &cloudmap.HealthCheckCustomConfig{}
	}
	out, err := checked(context.Background(), w.reg.CreateService, in)
	if err != nil {
		w.t.Fatal(err)
	}
	return *out.Service.Id
}

func (w *weft) register(srvID, id string, attrs map[string]string) {
	w.t.Helper()
	if _, err := checked(context.Background(), w.reg.RegisterInstance, &cloudmap.RegisterInstanceRequest{ServiceId: &srvID, InstanceId: &id, Attributes: attrs}); err != nil {
		w.t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// checked validates in as a Go caller of the registry must, and calls op
// with it.
func checked[In, Out any](ctx context.Context, op func(context.Context, cloudmap.Valid[In]) (*Out, error), in *In) (*Out, error) {
	v, err := cloudmap.Check(in)
	if err != nil {
		return nil, err
	}
	return op(ctx, v)
}

// checkedErr is checked for an operation without output.
func checkedErr[In any](ctx context.Context, op func(context.Context, cloudmap.Valid[In]) error, in *In) error {
	v, err := cloudmap.Check(in)
	if err != nil {
		return err
	}
	return op(ctx, v)
}

// query asks the server over net ("udp" or "tcp").
func query(t *testing.T, addr, network, name string, qtype uint16) *miekg.Msg {
	t.Helper()
	m := new(miekg.Msg)
	m.SetQuestion(name, qtype)
	c := &miekg.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, miekg.TypeToString[qtype], network, err)
	}
	return r
}

// values returns the answers' values ("10.0.0.1", "1 1 80 a.b.c.") sorted,
// and fails if any has another TTL than ttl.
func values(t *testing.T, rrs []miekg.RR, ttl uint32) []string {
	t.Helper()
	var out []string
	for _, rr := range rrs {
		if rr.Header().Ttl != ttl {
			t.Errorf("%v: TTL %d, want %d", rr, rr.Header().Ttl, ttl)
		}
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	sort.Strings(out)
	return out
}

func TestAnswers(t *testing.T) {
	w := start(t, filepath.Join(t.TempDir(), "weft.db"), dns.Config{})
	nsID := w.namespace("colors.local", 30)
	red := w.service(nsID, "red", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
	var all []string
	for i := range 10 {
		ip := fmt.Sprintf("10.0.0.%d", i+1)
		all = append(all, ip)
		w.register(red, fmt.Sprint("task-", i), map[string]string{cloudmap.AttrIPv4: ip})
	}
	weighted := w.service(nsID, "one", cloudmap.RoutingPolicyWeighted, false, cloudmap.RecordTypeA)
	for i := range 3 {
		w.register(weighted, fmt.Sprint("w-", i), map[string]string{cloudmap.AttrIPv4: fmt.Sprintf("10.0.1.%d", i+1)})
	}
	dual := w.service(nsID, "dual", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA, cloudmap.RecordTypeAaaa)
	w.register(dual, "d", map[string]string{cloudmap.AttrIPv4: "10.0.2.1", cloudmap.AttrIPv6: "fd00::2:1"})
	srv := w.service(nsID, "_grpc._tcp", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeSrv)
	w.register(srv, "s1", map[string]string{cloudmap.AttrIPv4: "10.0.3.1", cloudmap.AttrPort: "8443"})
	cname := w.service(nsID, "alias", cloudmap.RoutingPolicyWeighted, false, cloudmap.RecordTypeCname)
	w.register(cname, "c", map[string]string{cloudmap.AttrCNAME: "red.colors.local"})
	w.service(nsID, "api-only", "", false)
	w.service(nsID, "empty", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
	w.sync()
	addr := w.dns.Addr()

	t.Run("MULTIVALUE answers up to 8 healthy instances", func(t *testing.T) {
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, addr, network, "red.colors.local.", miekg.TypeA)
			got := values(t, r.Answer, 60)
			if r.Rcode != miekg.RcodeSuccess || !r.Authoritative || len(got) != 8 || len(slices.Compact(got)) != 8 {
				t.Fatalf("%s: rcode %s aa %v answers %v", network, miekg.RcodeToString[r.Rcode], r.Authoritative, got)
			}
			for _, ip := range got {
				if !slices.Contains(all, ip) {
					t.Errorf("answer %s was never registered", ip)
				}
			}
		}
	})
	t.Run("WEIGHTED answers one", func(t *testing.T) {
		if got := values(t, query(t, addr, "udp", "one.colors.local.", miekg.TypeA).Answer, 60); len(got) != 1 || !strings.HasPrefix(got[0], "10.0.1.") {
			t.Errorf("answers %v", got)
		}
	})
	t.Run("names are case-insensitive", func(t *testing.T) {
		r := query(t, addr, "udp", "RED.Colors.LOCAL.", miekg.TypeA)
		if len(r.Answer) != 8 || r.Answer[0].Header().Name != "RED.Colors.LOCAL." {
			t.Errorf("answers %v", r.Answer)
		}
	})

	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		ttl   uint32
		want  []string // answer values; nil: no answer
		extra []string // additional section values
	}{
		{"A of an A and AAAA service", "dual.colors.local.", miekg.TypeA, miekg.RcodeSuccess, 60, []string{"10.0.2.1"}, nil},
		{"AAAA", "dual.colors.local.", miekg.TypeAAAA, miekg.RcodeSuccess, 61, []string{"fd00::2:1"}, nil},
		{"SRV with the instance's address", "_grpc._tcp.colors.local.", miekg.TypeSRV, miekg.RcodeSuccess, 60, []string{"1 1 8443 s1._grpc._tcp.colors.local."}, []string{"10.0.3.1"}},
		{"SRV target", "s1._grpc._tcp.colors.local.", miekg.TypeA, miekg.RcodeSuccess, 60, []string{"10.0.3.1"}, nil},
		{"CNAME", "alias.colors.local.", miekg.TypeA, miekg.RcodeSuccess, 60, []string{"red.colors.local."}, nil},
		{"SOA at the apex", "colors.local.", miekg.TypeSOA, miekg.RcodeSuccess, 30, []string{"ns.colors.local. hostmaster.colors.local. %d 7200 900 1209600 30"}, nil},
		{"NS at the apex", "colors.local.", miekg.TypeNS, miekg.RcodeSuccess, 172800, []string{"ns.colors.local."}, nil},
		{"type the service has no record of: NODATA", "red.colors.local.", miekg.TypeAAAA, miekg.RcodeSuccess, 0, nil, nil},
		{"unknown name in the zone: NXDOMAIN", "blue.colors.local.", miekg.TypeA, miekg.RcodeNameError, 0, nil, nil},
		{"service without DNS records: NXDOMAIN", "api-only.colors.local.", miekg.TypeA, miekg.RcodeNameError, 0, nil, nil},
		{"service without instances: NXDOMAIN", "empty.colors.local.", miekg.TypeA, miekg.RcodeNameError, 0, nil, nil},
		{"deeper unknown name: NXDOMAIN", "a.b.red.colors.local.", miekg.TypeA, miekg.RcodeNameError, 0, nil, nil},
		{"outside every zone, no upstream: REFUSED", "example.com.", miekg.TypeA, miekg.RcodeRefused, 0, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := query(t, addr, "udp", tt.qname, tt.qtype)
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s", miekg.RcodeToString[r.Rcode], miekg.RcodeToString[tt.rcode])
			}
			want := slices.Clone(tt.want)
			for i := range want {
				if strings.Contains(want[i], "%d") {
					want[i] = fmt.Sprintf(want[i], w.st.Revision())
				}
			}
			if got := values(t, r.Answer, tt.ttl); !slices.Equal(got, want) {
				t.Errorf("answers %v, want %v", got, want)
			}
			if len(tt.extra) > 0 {
				if got := values(t, r.Extra, tt.ttl); !slices.Equal(got, tt.extra) {
					t.Errorf("additional %v, want %v", got, tt.extra)
				}
			}
			inZone := tt.rcode != miekg.RcodeRefused
			if r.Authoritative != inZone {
				t.Errorf("authoritative %v", r.Authoritative)
			}
			if inZone && len(r.Answer) == 0 {
				if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != miekg.TypeSOA || r.Ns[0].(*miekg.SOA).Minttl != 30 {
					t.Errorf("negative answer without the zone's SOA: %v", r.Ns)
				}
			}
		})
	}

	t.Run("Go's resolver", func(t *testing.T) {
		res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
		ips, err := res.LookupHost(context.Background(), "dual.colors.local")
		sort.Strings(ips)
		if err != nil || !slices.Equal(ips, []string{"10.0.2.1", "fd00::2:1"}) {
			t.Errorf("LookupHost = %v, %v", ips, err)
		}
		_, err = res.LookupHost(context.Background(), "blue.colors.local")
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("LookupHost(blue) = %v, want not found", err)
		}
	})
}

// TestLive checks that registrations, deregistrations and health changes
// reach DNS answers as they are committed.
func TestLive(t *testing.T) {
	w := start(t, filepath.Join(t.TempDir(), "weft.db"), dns.Config{})
	addr := w.dns.Addr()
	lookup := func(name string) []string {
		t.Helper()
		r := query(t, addr, "udp", name, miekg.TypeA)
		return values(t, r.Answer, 60)
	}
	if r := query(t, addr, "udp", "web.live.local.", miekg.TypeA); r.Rcode != miekg.RcodeRefused {
		t.Fatalf("before the namespace exists: %s, want REFUSED", miekg.RcodeToString[r.Rcode])
	}
	nsID := w.namespace("live.local", 0)
	web := w.service(nsID, "web", cloudmap.RoutingPolicyMultivalue, true, cloudmap.RecordTypeA)
	w.sync()
	if r := query(t, addr, "udp", "web.live.local.", miekg.TypeA); r.Rcode != miekg.RcodeNameError {
		t.Fatalf("no instances yet: %s, want NXDOMAIN", miekg.RcodeToString[r.Rcode])
	}
	w.register(web, "a", map[string]string{cloudmap.AttrIPv4: "10.9.0.1"})
	w.register(web, "b", map[string]string{cloudmap.AttrIPv4: "10.9.0.2", cloudmap.AttrInitHealthStat: "UNHEALTHY"})
	w.sync()
	if got := lookup("web.live.local."); !slices.Equal(got, []string{"10.9.0.1"}) {
		t.Fatalf("after registering a (healthy) and b (unhealthy): %v", got)
	}
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"b healthy", func() error {
			return checkedErr(context.Background(), w.reg.UpdateInstanceCustomHealthStatus, &cloudmap.UpdateInstanceCustomHealthStatusRequest{ServiceId: &web, InstanceId: ptr("b"), Status: cloudmap.CustomHealthStatusHealthy})
		}, []string{"10.9.0.1", "10.9.0.2"}},
		{"a unhealthy", func() error {
			return checkedErr(context.Background(), w.reg.UpdateInstanceCustomHealthStatus, &cloudmap.UpdateInstanceCustomHealthStatusRequest{ServiceId: &web, InstanceId: ptr("a"), Status: cloudmap.CustomHealthStatusUnhealthy})
		}, []string{"10.9.0.2"}},
		{"b re-registered at a new address", func() error {
			_, err := checked(context.Background(), w.reg.RegisterInstance, &cloudmap.RegisterInstanceRequest{ServiceId: &web, InstanceId: ptr("b"), Attributes: map[string]string{cloudmap.AttrIPv4: "10.9.0.3"}})
			return err
		}, []string{"10.9.0.3"}},
		{"b deregistered", func() error {
			_, err := checked(context.Background(), w.reg.DeregisterInstance, &cloudmap.DeregisterInstanceRequest{ServiceId: &web, InstanceId: ptr("b")})
			return err
		}, nil},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		w.sync()
		if got := lookup("web.live.local."); !slices.Equal(got, s.want) {
			t.Fatalf("after %s: %v, want %v", s.name, got, s.want)
		}
	}
}

// TestForward checks that names outside the zones go to the upstreams,
// over the transport the query came by.
func TestForward(t *testing.T) {
	upstream := startUpstream(t)
	dead := deadAddr(t)
	w := start(t, filepath.Join(t.TempDir(), "weft.db"), dns.Config{Upstreams: []string{dead, upstream}, UpstreamTimeout: time.Second})
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, w.dns.Addr(), network, "example.com.", miekg.TypeA)
		if r.Rcode != miekg.RcodeSuccess || r.Authoritative || !r.RecursionAvailable || len(r.Answer) != 1 || r.Answer[0].(*miekg.A).A.String() != "192.0.2.7" {
			t.Errorf("%s: forwarded answer %v", network, r)
		}
	}
}

// startUpstream runs a resolver that answers every A query with 192.0.2.7.
func startUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Skipf("no TCP port beside UDP %s: %v", pc.LocalAddr(), err)
	}
	h := miekg.HandlerFunc(func(w miekg.ResponseWriter, req *miekg.Msg) {
		m := new(miekg.Msg)
		m.SetReply(req)
		m.Answer = []miekg.RR{&miekg.A{Hdr: miekg.RR_Header{Name: req.Question[0].Name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: 5}, A: net.IPv4(192, 0, 2, 7)}}
		w.WriteMsg(m)
	})
	for _, s := range []*miekg.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe() // ends with Shutdown in Cleanup
		<-started
		t.Cleanup(func() { s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// deadAddr is an address where nothing answers DNS.
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestRestart checks that a DNS server on a reopened store answers with
// the instances registered before.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weft.db")
	w := start(t, path, dns.Config{})
	nsID := w.namespace("restart.local", 0)
	web := w.service(nsID, "web", cloudmap.RoutingPolicyMultivalue, false, cloudmap.RecordTypeA)
	w.register(web, "a", map[string]string{cloudmap.AttrIPv4: "10.8.0.1"})

	w.stop()
	w2 := start(t, path, dns.Config{})
	if got := values(t, query(t, w2.dns.Addr(), "udp", "web.restart.local.", miekg.TypeA).Answer, 60); !slices.Equal(got, []string{"10.8.0.1"}) {
		t.Errorf("after restart: %v", got)
	}
}
