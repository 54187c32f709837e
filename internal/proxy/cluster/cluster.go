// Package cluster implements weft proxy's upstream clusters: endpoints from
// EDS, DNS or static config, load balancing, circuit breakers, active health
// checks, outlier detection and pooled HTTP/1.1 and h2c connections.
//
// A Manager owns every cluster. Apply (CDS) and SetEndpoints (EDS) build
// the new state completely, then swap it in and stop what it replaced; on
// any error nothing changes and the caller NACKs.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// Errors Pick and Acquire return; the HTTP and TCP handlers map them to
// response flags (UH, UO) and local replies.
var (
	ErrNoHealthyUpstream = errors.New("no healthy upstream")
	ErrOverflow          = errors.New("overflow")
	// ErrPendingOverflow is the ErrOverflow (errors.Is) of
	// max_connections reached with the pending queue full: Envoy's pool
	// refuses that stream before a host is attached to it
	// (ConnPoolImplBase::newStream calls onPoolFailure without one), so
	// the request has no upstream host (Acquire).
	ErrPendingOverflow = fmt.Errorf("pending %w", ErrOverflow)
)

// Type is the cluster discovery type.
type Type uint8

// Cluster discovery types weft proxy implements.
const (
	Static Type = iota
	StrictDNS
	LogicalDNS
	EDS
	OriginalDst
)

type lbPolicy uint8

const (
	roundRobin lbPolicy = iota
	leastRequest
	random
	clusterProvided
)

// unlimited is the circuit-breaker value App Mesh uses to mean "off".
const unlimited = math.MaxUint32

// Cluster is one upstream cluster. Its configuration is immutable; its host
// set changes with EDS and DNS.
type Cluster struct {
	Name string
	PB   *clusterv3.Cluster // as accepted, for config_dump
	Type Type

	log            *slog.Logger
	lb             lbPolicy
	choiceCount    int
	panicThreshold float64 // percent

	hosts   atomic.Pointer[hostSet]
	rr      atomic.Uint64
	origDst sync.Map // ORIGINAL_DST hosts by address

	// HTTP2 is set when upstream requests use h2c; UseDownstream when the
	// downstream protocol decides per request.
	HTTP2, UseDownstream bool
	// ConnectTimeout is connect_timeout (Envoy's default 5 s): it bounds
	// a new upstream connection's TCP connect and TLS handshake together,
	// from the connect's start, on both request paths, as Envoy's pool
	// arms its connect timer with the connection and stops it at the
	// Connected event, which its TLS socket raises once the handshake is
	// done (ActiveClient, SslSocket::onSuccess). Set by Build.
	ConnectTimeout time.Duration
	// IdleTimeout is common_http_protocol_options.idle_timeout (Envoy's
	// default an hour): an upstream connection without a request that
	// long is closed. Set by Build, for the event loops' HTTP/2
	// connections; the Transports here take it at their start.
	IdleTimeout time.Duration
	// H2Windows are initial_stream_window_size and
	// initial_connection_window_size of the cluster's HTTP/2 options
	// (each zero when unset): the windows both paths' HTTP/2 connections
	// give the upstream. Each unset, the loops give route.DefaultH2Windows'
	// and the goroutine path's Transport x/net's own (newH2Transport). Set
	// by Build.
	H2Windows route.H2Windows
	h1        *h1Client
	h2        *http2.Transport
	h2pool    *h2Pool // c.h2's connections (h2pool.go)
	// TLS, when set, wraps every upstream connection (transport_socket).
	TLS *tlsctx.Client

	cb        thresholds
	rqActive  atomic.Int64
	retries   atomic.Int64
	gate      *gate // HTTP/1 connection limit with a pending queue; nil when unlimited
	cxActive  atomic.Int64
	dnsLookup clusterv3.Cluster_DnsLookupFamily
	dnsRate   time.Duration
	dnsTarget []dnsTarget
	// dnsState is each dnsTarget's last resolution, by index; owned by
	// resolveLoop (a test that does not start the cluster calls
	// resolveOnce itself).
	dnsState []dnsState
	resolver *net.Resolver // nil: net.DefaultResolver (tests aim it at their own server)

	hc       *healthCheck
	outlier  *outlierConfig
	cleanup  time.Duration
	hostWake chan struct{} // signalled when the host set changes; buffered 1
	// gone tells the Manager's OnHostsGone hooks of the hosts an update
	// removes (setHosts); nil for a cluster built outside a Manager.
	gone *goneHooks

	// releaseRq and releaseRqCx are Acquire's releases (breaker.go),
	// made once.
	releaseRq, releaseRqCx func()

	Stats Stats

	stop context.CancelFunc
	wg   sync.WaitGroup
}

type thresholds struct {
	maxConnections, maxPending, maxRequests, maxRetries uint32
}

type dnsTarget struct {
	host   string
	port   uint32
	weight uint32
}

// Hosts returns the current hosts (shared; do not modify).
func (c *Cluster) Hosts() []*Host {
	if hs := c.hosts.Load(); hs != nil {
		return hs.hosts
	}
	return nil
}

// start launches the cluster's background work: DNS resolution, health
// checks, outlier un-ejection and ORIGINAL_DST cleanup. stop ends it.
func (c *Cluster) start(ctx context.Context, st *stats.Store) {
	ctx, c.stop = context.WithCancel(ctx)
	if c.hosts.Load() == nil {
		c.hosts.Store(newHostSet(nil))
	}
	if c.Type == Static && len(c.Hosts()) > 0 {
		// Envoy's static cluster adds its hosts when it starts.
		c.Stats.membershipChange.Inc()
	}
	sc := c.Stats.scope
	sc.GaugeFunc("membership_total", func() int64 { return int64(len(c.Hosts())) })
	sc.GaugeFunc("membership_healthy", func() int64 {
		n := 0
		for _, h := range c.Hosts() {
			if h.Healthy() {
				n++
			}
		}
		return int64(n)
	})
	sc.GaugeFunc("membership_excluded", func() int64 {
		// Envoy's excluded hosts: here those EDS marks DRAINING
		// (EDS_STATUS_DRAINING, excludeBasedOnHealthFlag).
		n := 0
		for _, h := range c.Hosts() {
			if h.flags.Load()&edsDraining != 0 {
				n++
			}
		}
		return int64(n)
	})
	sc.GaugeFunc("outlier_detection.ejections_active", func() int64 {
		n := 0
		for _, h := range c.Hosts() {
			if h.flags.Load()&outlierEjected != 0 {
				n++
			}
		}
		return int64(n)
	})
	open := func(cur func() int64, max uint32) func() int64 {
		return func() int64 {
			if cur() >= int64(max) {
				return 1
			}
			return 0
		}
	}
	sc.GaugeFunc("circuit_breakers.default.cx_open", open(c.cxActive.Load, c.cb.maxConnections))
	sc.GaugeFunc("circuit_breakers.default.rq_open", open(c.rqActive.Load, c.cb.maxRequests))
	sc.GaugeFunc("circuit_breakers.default.rq_retry_open", open(c.retries.Load, c.cb.maxRetries))
	sc.GaugeFunc("circuit_breakers.default.rq_pending_open", func() int64 {
		if c.gate != nil && c.gate.pendingFull() {
			return 1
		}
		return 0
	})
	if len(c.dnsTarget) > 0 {
		c.wg.Add(1)
		go c.resolveLoop(ctx) // ends with ctx; waited for by stop
	}
	if c.hc != nil {
		c.wg.Add(1)
		go c.healthLoop(ctx) // ends with ctx; waited for by stop
	}
	if c.outlier != nil {
		c.wg.Add(1)
		go c.outlierLoop(ctx) // ends with ctx; waited for by stop
	}
	if c.Type == OriginalDst {
		c.wg.Add(1)
		go c.cleanupLoop(ctx) // ends with ctx; waited for by stop
	}
}

// halt stops background work and closes idle upstream connections.
// In-flight requests finish on their connections (HTTP/2 ones, drained,
// close after their last).
func (c *Cluster) halt() {
	if c.stop != nil {
		c.stop()
	}
	c.wg.Wait()
	if c.h1 != nil {
		c.h1.closeIdle()
	}
	if c.h2pool != nil {
		c.h2pool.drain(nil, nil) // as Envoy drains a removed cluster's pools
	}
	c.origDst.Range(func(_, v any) bool {
		v.(*Host).origDst.closeIdle()
		return true
	})
}

// Pick chooses a host for a request. avoid, when non-nil, rejects hosts
// (the previous_hosts retry predicate), tried up to attempts times. A
// cluster without a healthy host counts upstream_cx_none_healthy, as
// Envoy's cluster manager counts each pick that finds none.
func (c *Cluster) Pick(avoid func(*Host) bool, attempts int) (*Host, error) {
	h, err := c.Peek(avoid, attempts)
	if err != nil {
		c.Stats.CxNoneHealthy.Inc()
	}
	return h, err
}

// Peek is Pick without counting upstream_cx_none_healthy: for a caller
// that hands a request the cluster has no healthy host for to one that
// picks again and answers it (the loops hand such an HTTP/1.1 request to
// the goroutine path), so that the request counts once, as Envoy counts
// no peek (httpConnPoolImpl with peek set).
func (c *Cluster) Peek(avoid func(*Host) bool, attempts int) (*Host, error) {
	hs := c.hosts.Load()
	n := len(hs.hosts)
	if n == 0 {
		return nil, ErrNoHealthyUpstream
	}
	// The panic threshold counts the hosts not excluded (Envoy's
	// isHostSetInPanic: healthy over hosts less excluded, 0% when all
	// are excluded); in panic every host is picked, excluded ones too.
	healthy, counted := 0, n
	for _, h := range hs.hosts {
		if h.Healthy() {
			healthy++
		} else if h.flags.Load()&edsDraining != 0 {
			counted--
		}
	}
	all := false
	if float64(healthy)*100 < c.panicThreshold*float64(counted) || counted == 0 && c.panicThreshold > 0 {
		// Panic: too few healthy hosts, balance over all of them.
		c.Stats.LbHealthyPanic.Inc()
		all = true
	} else if healthy == 0 {
		return nil, ErrNoHealthyUpstream
	}
	if attempts < 1 {
		attempts = 1
	}
	var h *Host
	for i := 0; i < attempts; i++ {
		h = c.pickOnce(hs, all)
		if avoid == nil || !avoid(h) {
			break
		}
	}
	return h, nil
}

func (c *Cluster) pickOnce(hs *hostSet, all bool) *Host {
	ok := func(h *Host) bool { return all || h.Healthy() }
	n := len(hs.hosts)
	switch {
	case c.lb == random || c.lb == leastRequest:
		var best *Host
		choices := 1
		if c.lb == leastRequest {
			choices = c.choiceCount
		}
		for k := 0; k < choices; k++ {
			start := rand.IntN(n)
			for i := 0; i < n; i++ {
				h := hs.hosts[(start+i)%n]
				if ok(h) {
					if best == nil || h.rqActive.Load() < best.rqActive.Load() {
						best = h
					}
					break
				}
			}
		}
		return best
	case hs.weighted:
		hs.mu.Lock()
		defer hs.mu.Unlock()
		var total int64
		best := -1
		for i, h := range hs.hosts {
			w := int64(h.Weight())
			if !ok(h) || w == 0 {
				continue
			}
			hs.cur[i] += w
			total += w
			if best < 0 || hs.cur[i] > hs.cur[best] {
				best = i
			}
		}
		if best < 0 {
			return hs.hosts[0]
		}
		hs.cur[best] -= total
		return hs.hosts[best]
	default:
		start := int(c.rr.Add(1) % uint64(n))
		for i := 0; i < n; i++ {
			if h := hs.hosts[(start+i)%n]; ok(h) {
				return h
			}
		}
		return hs.hosts[start]
	}
}

// OriginalDstHost returns the host for an ORIGINAL_DST connection to addr.
// It never returns a host the cleanup is removing (cleanOrigDst): one
// taken as it was removed would keep its connections, which no cleanup
// reaches once the host is out of the map, until their idle timeout.
func (c *Cluster) OriginalDstHost(addr string) *Host {
	for {
		now := time.Now().UnixNano()
		v, ok := c.origDst.Load(addr)
		if !ok {
			h := newHost(addr, 1)
			h.lastUsed.Store(now)
			v, _ = c.origDst.LoadOrStore(addr, h)
		}
		h := v.(*Host)
		h.lastUsed.Store(now)
		if !h.removing.Load() {
			return h
		}
		// The cleanup removed it, or is deciding in a few instructions:
		// it keeps the host (it sees the use just stored) or removes it.
		// Either way the map says which.
		runtime.Gosched()
	}
}

func (c *Cluster) cleanupLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.cleanup)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.cleanOrigDst(now.UnixNano())
		}
	}
}

// cleanOrigDst removes the ORIGINAL_DST hosts unused for the cleanup
// interval, with their idle connections. A host is marked removing, then
// checked for a use again: OriginalDstHost stores its use before it reads
// the mark, so one of the two sees the other's write, and a host is never
// both handed out and removed.
func (c *Cluster) cleanOrigDst(now int64) {
	unused := func(h *Host) bool {
		return h.rqActive.Load() == 0 && now-h.lastUsed.Load() > int64(c.cleanup)
	}
	c.origDst.Range(func(k, v any) bool {
		h := v.(*Host)
		if !unused(h) {
			return true
		}
		// Its idle pooled connections count in cxActive: they go first,
		// as Envoy drains a cleaned-up host's pools, or neither they nor
		// the host ever would.
		if c.h1 != nil {
			c.h1.forgetAddr(k.(string))
		}
		h.origDst.closeIdle()
		if h.cxActive.Load() != 0 {
			return true
		}
		h.removing.Store(true)
		if unused(h) {
			// Removed, and marked for good: a request that loaded it
			// before looks the address up again.
			c.origDst.Delete(k)
		} else {
			h.removing.Store(false) // used meanwhile: kept
		}
		return true
	})
}
