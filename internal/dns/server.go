// Package dns is weft's DNS server: authoritative for Cloud Map's DNS
// namespaces (A, AAAA, SRV and CNAME records of their services' healthy
// instances, SOA and NS at the apex, NXDOMAIN for other names inside), and
// a forwarder to upstream resolvers for every other name (REFUSED when
// there are none).
//
// It answers from a discovery.Index that it keeps current by following
// the store's changes (discovery.Follow): a registration is visible to the
// next query after its commit, with no polling.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
)

// Config configures a Server.
type Config struct {
	// Upstreams are resolvers (host:port; port 53 if omitted) that answer
	// names outside Cloud Map's zones, tried in order. None: REFUSED.
	Upstreams []string
	// UpstreamTimeout bounds one upstream exchange; 2 seconds if zero.
	UpstreamTimeout time.Duration
	// Limits bound answer sizes, response rates and forwarding.
	Limits Limits
	// Registry receives the server's metrics; nil registers none.
	Registry prometheus.Registerer
	// Skipped counts the Cloud Map records the server's index leaves out
	// (logged "skipping undecodable record"), but for those set aside
	// while their namespace or service is missing (discovery.ErrOrphaned,
	// logged "setting aside record until its parent is back"); nil: not
	// counted.
	Skipped prometheus.Counter
}

// Server is a DNS server bound to one address on UDP and TCP.
type Server struct {
	udp       net.PacketConn
	tcp       net.Listener
	upstreams []string
	timeout   time.Duration
	log       *slog.Logger
	limits    Limits
	rrl       *rrl // nil when off
	metrics   *dnsMetrics
	skipped   prometheus.Counter              // Config.Skipped; nil: not counted
	forwards  chan struct{}                   // a slot per query being forwarded (MaxForwards)
	ix        atomic.Pointer[discovery.Index] // written by Run's follower, read by every query
	closeOnce sync.Once

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when ix changes; protected by mu
}

// Listen binds addr ("host:port"; port 0 picks a port free on both UDP
// and TCP) and returns the server, which answers once Run starts. The
// caller must call Run or Close.
func Listen(addr string, cfg Config, log *slog.Logger) (*Server, error) {
	udp, tcp, err := bind(addr)
	if err != nil {
		return nil, err
	}
	s := &Server{udp: udp, tcp: tcp, timeout: cfg.UpstreamTimeout, log: log, skipped: cfg.Skipped, changed: make(chan struct{})}
	s.limits = cfg.Limits.withDefaults()
	if s.limits.Allow == nil {
		bound := addrIP(udp.LocalAddr())
		if s.limits.Allow, err = defaultAllow(bound); err != nil {
			s.Close()
			return nil, err
		}
	}
	if s.limits.RRLRate > 0 {
		s.rrl = newRRL(s.limits.RRLRate, s.limits.RRLSlip)
	}
	s.metrics = newDNSMetrics(cfg.Registry)
	s.forwards = make(chan struct{}, s.limits.MaxForwards)
	if s.timeout <= 0 {
		s.timeout = 2 * time.Second
	}
	for _, u := range cfg.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			u = net.JoinHostPort(u, "53")
		}
		s.upstreams = append(s.upstreams, u)
	}
	return s, nil
}

// bind listens on UDP and TCP at the same port. With port 0 the kernel
// picks the UDP port, which TCP may have taken: try a few.
func bind(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns address %q: %w", addr, err)
	}
	var lastErr error
	for range 10 {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen dns udp %s: %w", addr, err)
		}
		p := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("listen dns tcp %s: %w", addr, lastErr)
}

// Addr is the address the server listens on, UDP and TCP.
func (s *Server) Addr() string { return s.udp.LocalAddr().String() }

// Close releases the listeners; Run does it when it returns.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.udp.Close()
		s.tcp.Close()
	})
	return nil
}

// Run follows src and serves until ctx ends, then stops and returns after
// every goroutine it started has ended. It starts answering once the index
// is loaded, so no query sees a half-read registry.
func (s *Server) Run(ctx context.Context, src discovery.Source) error {
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	loaded := make(chan struct{})
	followErr := make(chan error, 1)
	go func() { // ends with ctx
		first := true
		skip := func(key string, err error) {
			if errors.Is(err, discovery.ErrOrphaned) {
				// It decodes, and comes back with its parent: not
				// counted (a parent that does not decode is).
				s.log.Warn("setting aside record until its parent is back", "key", key, "error", err)
				return
			}
			if s.skipped != nil {
				s.skipped.Inc()
			}
			s.log.Error("skipping undecodable record", "key", key, "error", err)
		}
		followErr <- discovery.Follow(ctx, src, skip, func(u discovery.Update) {
			s.publish(u.Index)
			if first {
				first = false
				close(loaded)
			}
		})
	}()
	select {
	case <-loaded:
	case err := <-followErr:
		return err
	}

	handler := miekg.HandlerFunc(s.serveDNS)
	servers := []*miekg.Server{
		{PacketConn: s.udp, Handler: handler},
		{Listener: netutil.LimitListener(s.tcp, s.limits.MaxTCPConns), Handler: handler, ReadTimeout: 10 * time.Second},
	}
	serveErr := make(chan error, len(servers))
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { serveErr <- srv.ActivateAndServe() }() // ends with Shutdown below
		select {
		case <-started:
		case err := <-serveErr:
			serveErr <- err
		}
	}
	s.log.Info("dns listening", "addr", s.Addr(), "upstreams", s.upstreams)

	var err error
	select {
	case <-ctx.Done():
	case err = <-followErr:
		followErr <- err
		err = fmt.Errorf("follow the registry: %w", err)
	case err = <-serveErr:
		serveErr <- err
		err = fmt.Errorf("serve dns: %w", err)
	}
	cancel()
	for _, srv := range servers {
		sctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		srv.ShutdownContext(sctx)
		stop()
	}
	for range servers {
		<-serveErr
	}
	if ferr := <-followErr; err == nil && !errors.Is(ferr, context.Canceled) {
		err = ferr
	}
	return err
}

func (s *Server) publish(ix *discovery.Index) {
	s.ix.Store(ix)
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// WaitRevision returns once the server answers from the registry as of
// store revision rev or later, or when ctx ends. rev must be the revision
// of a change to Cloud Map records: other changes do not reach the
// server. Tests and benchmarks use it to wait for a write to be visible.
func (s *Server) WaitRevision(ctx context.Context, rev store.Revision) error {
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if ix := s.ix.Load(); ix != nil && ix.Revision() >= rev {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// serveDNS answers one query: from the index inside a zone, from the
// upstreams outside.
func (s *Server) serveDNS(w miekg.ResponseWriter, req *miekg.Msg) {
	if len(req.Question) != 1 || req.Opcode != miekg.OpcodeQuery || req.Response {
		m := new(miekg.Msg)
		m.SetRcode(req, miekg.RcodeFormatError)
		if req.Opcode != miekg.OpcodeQuery {
			m.Rcode = miekg.RcodeNotImplemented
		}
		w.WriteMsg(m)
		return
	}
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	if udp && s.rrl != nil {
		if !s.allowed(w.RemoteAddr()) {
			ip := addrIP(w.RemoteAddr())
			switch s.rrl.take(ip, time.Now()) {
			case drop:
				s.metrics.limited.WithLabelValues("drop").Inc()
				return
			case slip:
				s.metrics.limited.WithLabelValues("slip").Inc()
				m := new(miekg.Msg)
				m.SetReply(req)
				m.Truncated = true
				w.WriteMsg(m)
				return
			}
		}
	}
	m := answer(s.ix.Load(), req, randomShuffle)
	switch {
	case m == nil && !s.allowed(w.RemoteAddr()):
		s.metrics.refused.Inc()
		m = new(miekg.Msg).SetRcode(req, miekg.RcodeRefused)
	case m == nil:
		m = s.forward(w, req)
		m.RecursionAvailable = len(s.upstreams) > 0
	default:
		m.RecursionAvailable = len(s.upstreams) > 0
		if udp && req.Question[0].Qtype == miekg.TypeANY {
			minimalANY(m)
		}
	}
	size := miekg.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), miekg.MinMsgSize), s.limits.MaxUDPSize)
		if m.IsEdns0() == nil {
			m.SetEdns0(uint16(s.limits.MaxUDPSize), false)
		}
	}
	if udp {
		m.Truncate(size)
		if m.Truncated {
			s.metrics.truncated.Inc()
		}
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns write", "err", err)
	}
}

// forward asks the upstreams in order, over the transport the query came
// by; REFUSED without upstreams, SERVFAIL when none answers or MaxForwards
// queries are being forwarded already.
func (s *Server) forward(w miekg.ResponseWriter, req *miekg.Msg) *miekg.Msg {
	m := new(miekg.Msg)
	if len(s.upstreams) == 0 {
		return m.SetRcode(req, miekg.RcodeRefused)
	}
	select {
	case s.forwards <- struct{}{}:
		defer func() { <-s.forwards }()
	default:
		s.metrics.forwardsFull.Inc()
		return m.SetRcode(req, miekg.RcodeServerFailure)
	}
	c := &miekg.Client{Net: "udp", Timeout: s.timeout}
	if _, isTCP := w.RemoteAddr().(*net.TCPAddr); isTCP {
		c.Net = "tcp"
	}
	for _, u := range s.upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		resp, _, err := c.ExchangeContext(ctx, req, u)
		cancel()
		if err == nil && resp != nil {
			resp.Id = req.Id
			return resp
		}
		s.log.Debug("dns upstream", "upstream", u, "name", req.Question[0].Name, "err", err)
	}
	return m.SetRcode(req, miekg.RcodeServerFailure)
}
