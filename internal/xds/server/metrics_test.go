package server

import "testing"

// TestWriteToAck: weft_xds_write_to_ack_seconds observes, for a write,
// each affected stream once, when it ACKs the version the write produced,
// and only the types the write changed; a NACK, a stream the write does
// not affect and a stream that connects afterwards observe nothing.
func TestWriteToAck(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	a := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	envoyStart(t, a)
	b := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red")) // a replica
	envoyStart(t, b)
	other := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/blue")) // reads no endpoints
	other.request(cdsType, "", "", nil, "")
	other.ack(other.next())
	if n := writeToAckCount(t, srv, "eds"); n != 0 {
		t.Fatalf("%d observations before any write", n)
	}

	// A write red's endpoints read: one observation per replica, at its
	// ACK, not before.
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	ea, eb := a.next(), b.next()
	expect(t, ea, edsType, "cds_egress_m_blue")
	expect(t, eb, edsType, "cds_egress_m_blue")
	a.ack(ea, "cds_egress_m_blue")
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Types["eds"].AckedReplicas == 1 })
	if n := writeToAckCount(t, srv, "eds"); n != 1 {
		t.Fatalf("%d observations once one of two replicas ACKed, want 1", n)
	}
	late := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red")) // configured after the write
	envoyStart(t, late)
	b.ack(eb, "cds_egress_m_blue")
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Types["eds"].AckedReplicas == 3 })
	if n := writeToAckCount(t, srv, "eds"); n != 2 {
		t.Fatalf("%d observations once both replicas ACKed, want 2", n)
	}
	for _, typ := range []string{"cds", "lds", "rds"} {
		if n := writeToAckCount(t, srv, typ); n != 0 {
			t.Fatalf("%s: %d observations for a write that changed only endpoints", typ, n)
		}
	}

	// A rejected push is not converged: nothing is observed.
	putInstance(t, st, "blue", "blue-3", "10.0.0.3")
	for _, c := range []*adsClient{a, b, late} {
		r := c.next()
		expect(t, r, edsType, "cds_egress_m_blue")
		c.request(edsType, eb.GetVersionInfo(), r.GetNonce(), []string{"cds_egress_m_blue"}, "rejected")
	}
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.LastNack != nil })
	if n := writeToAckCount(t, srv, "eds"); n != 2 {
		t.Fatalf("%d observations after NACKs, want still 2", n)
	}
}

// writeToAckCount is the number of write-to-ACK observations of a type,
// as the registry /metrics serves exposes it.
func writeToAckCount(t *testing.T, srv *testServer, typ string) uint64 {
	t.Helper()
	mfs, err := srv.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_xds_write_to_ack_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
