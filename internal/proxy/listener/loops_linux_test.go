package listener

import (
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// loopsEgress is App Mesh's egress listener as the loops see it: HTTP
// chains on two backend ports (theirs), a TCP port and the amazonaws
// chain (not theirs), the inspector off but on 443.
func loopsEgress(t testing.TB) *Listener {
	lc := func(prefix string) *LoopChain { return &LoopChain{Router: handOffRouter{}, StatPrefix: prefix} }
	cfg := &Config{Name: "egress", Addr: "127.0.0.1:0", OriginalDst: true, InspectTLS: true,
		TLSDisabled: func(port uint16) bool { return port != 443 },
		Chains: []Chain{{Name: "8080", Match: Match{DstPort: 8080}}, {Name: "9090", Match: Match{DstPort: 9090}},
			{Name: "5432", Match: Match{DstPort: 5432}}, {Name: "amazonaws", Match: Match{DstPort: 443, ServerNames: []string{"*.amazonaws.com"}}}},
		Loops: &Loops{Chains: []*LoopChain{lc("egress_8080"), lc("egress_9090"), nil, nil}}}
	if err := cfg.Prepare(); err != nil {
		t.Fatal(err)
	}
	var ids atomic.Uint64
	l, err := Listen(cfg, stats.NewStore(), &ids, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.loops.Close)
	return l
}

// acceptedFD returns the descriptor of an accepted connection to a
// listener on 127.0.0.1:port (port 0: any).
func acceptedFD(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rc, err := s.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// TestClassifyEgress: a connection without NAT (its destination the
// listener's own port) matches no chain of the egress and is handed off;
// once a configuration's chain takes every connection it is served by
// that chain, with no address read.
func TestClassifyEgress(t *testing.T) {
	l := loopsEgress(t)
	fd := acceptedFD(t)
	if acc := l.classify(fd); !acc.HandOff {
		t.Fatalf("a connection no chain matches: %+v, want it handed off", acc)
	}
	one := &Config{Name: "one", Addr: "127.0.0.1:0", Chains: []Chain{{Name: "all"}},
		Loops: &Loops{Chains: []*LoopChain{{Router: handOffRouter{}, StatPrefix: "all"}}}}
	if err := one.Prepare(); err != nil {
		t.Fatal(err)
	}
	l.Update(one, true)
	acc := l.classify(fd)
	if acc.HandOff || acc.Chain == nil || acc.Chain != one.Loops.Chains[0].ev || acc.Local.IsValid() {
		t.Fatalf("the one chain's connection: %+v, want its chain and no address read", acc)
	}
}

// BenchmarkClassify is the loops' work for a new connection to App Mesh's
// egress listener: its addresses (getsockname, getpeername), its original
// destination (getsockopt SO_ORIGINAL_DST) and the chain selection.
func BenchmarkClassify(b *testing.B) {
	l := loopsEgress(b)
	fd := acceptedFD(b)
	b.ReportAllocs()
	for b.Loop() {
		l.classify(fd)
	}
}
