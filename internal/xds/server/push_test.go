package server

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// counter returns the value of a counter the server registered.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A write's response goes to an idle stream from the fan-out, without
// waking the stream's goroutine; to a stream still awaiting the answer to
// a response, from the stream's goroutine once the answer comes, never
// from the fan-out (whose SendMsg could then wait on the client).
func TestPushWithoutHandoff(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	last := envoyStart(t, c)
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Types["eds"].Acked == last[edsType].GetVersionInfo() && p.Types["rds"].Acked == last[rdsType].GetVersionInfo()
	})
	const inline = "weft_xds_inline_pushes_total"
	before := counter(t, srv.reg, inline)

	// delivered waits until the server has handed the store's state at
	// rev to the streams: the fan-out is over and counted.
	delivered := func(rev store.Revision) {
		t.Helper()
		waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(ProxyStatus) bool { return srv.Revision() >= rev })
	}

	// Idle: every response answered.
	delivered(put(t, st, cloudmap.InstanceKey("srv-blue", "blue-2"), cloudmap.InstanceRecord{
		Instance: cloudmap.Instance{Id: ptr("blue-2"), Attributes: map[string]string{cloudmap.AttrIPv4: "10.0.0.2", cloudmap.AttrPort: "8080"}},
		Health:   cloudmap.HealthStatusHealthy,
	}))
	eds := c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	if n := counter(t, srv.reg, inline) - before; n != 1 {
		t.Fatalf("%s rose by %v for a push to an idle stream, want 1", inline, n)
	}

	// Not idle: eds is not answered yet. A write that changes the
	// clusters (then the endpoints and routes): the new CDS, the type
	// before the unanswered one, goes out at once, from the stream's
	// goroutine; EDS and RDS wait for the answer.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	delivered(put(t, st, ref("m", appmesh.KindVirtualNode, "", "red").Key(), nodeData("m", "red", "blue.local", "green.local")))
	cds := c.next()
	expect(t, cds, cdsType, "cds_egress_m_blue", "cds_egress_m_green")
	if n := counter(t, srv.reg, inline) - before; n != 1 {
		t.Fatalf("%s rose by %v, want 1: a stream awaiting an answer was pushed to by the fan-out", inline, n)
	}
	c.ack(eds, "cds_egress_m_blue")
	expect(t, c.next(), edsType, "cds_egress_m_blue")
	expect(t, c.next(), rdsType, "rds_egress_http_80")
	c.ack(cds)
}

// A nonce carries a random part: a client cannot answer a response it
// has not read by counting (see pushNow).
func TestNonceUnguessable(t *testing.T) {
	a, b := &stream{}, &stream{}
	seen := map[string]bool{}
	for i := 1; i <= 3; i++ {
		na, nb := a.nextNonce(), b.nextNonce()
		for _, n := range []string{na, nb} {
			num, rnd, ok := strings.Cut(n, ".")
			if !ok || num != string(rune('0'+i)) || len(rnd) < 8 {
				t.Fatalf("nonce %q: want %d.<random>", n, i)
			}
			if seen[n] {
				t.Fatalf("nonce %q given twice", n)
			}
			seen[n] = true
		}
	}
}
