package cluster

import (
	"sync"
	"sync/atomic"
	"time"
)

// Health flags of a host; any set flag makes it unhealthy.
const (
	failedActiveHC  uint32 = 1 << iota // active health check failed
	pendingActiveHC                    // never checked yet
	edsUnhealthy                       // EDS said UNHEALTHY or TIMEOUT
	outlierEjected                     // ejected by outlier detection
	// edsDraining: EDS said DRAINING. As Envoy since 1.30
	// (EDS_STATUS_DRAINING, exclude_host_in_eds_status_draining; default
	// in 1.34), the host is unhealthy and excluded: not counted for the
	// panic threshold (Peek), picked only in panic, as Envoy picks its
	// excluded hosts ("excluded hosts are still eligible for traffic").
	// Before 1.30 it was edsUnhealthy.
	edsDraining
)

// Host is one upstream endpoint. It outlives host-set updates that keep its
// address, so health and outlier state carry over.
type Host struct {
	Addr     string   // ip:port the proxy connects to
	Hostname string   // DNS name it came from, if any
	locality locality // of an EDS host; a host that moves is a new Host

	// weight is its load-balancing weight. An EDS update changes it in
	// place, as Envoy does: the host keeps its health, outlier and
	// request state.
	weight atomic.Uint32

	flags atomic.Uint32

	// Statistics, shown by /clusters.
	rqActive  atomic.Int64
	rqTotal   atomic.Int64
	rqSuccess atomic.Int64
	rqError   atomic.Int64
	rqTimeout atomic.Int64
	cxActive  atomic.Int64
	cxTotal   atomic.Int64
	cxFail    atomic.Int64

	// Outlier detection, updated on the request path.
	consec5xx     atomic.Int32
	consecGateway atomic.Int32
	outlierMu     sync.Mutex
	ejections     int       // times ejected; protected by outlierMu
	ejectedUntil  time.Time // protected by outlierMu
	lastUsed      atomic.Int64

	// Active health checking; the counts are owned by the cluster's
	// checker goroutine, checked is read by others.
	hcFails, hcPasses int
	checked           atomic.Bool

	// origDst is an ORIGINAL_DST host's HTTP/2 Transport (origdst.go);
	// removing is set while the cleanup decides whether to remove it
	// (Cluster.cleanOrigDst).
	origDst  hostH2
	removing atomic.Bool
}

// locality is an endpoint's corev3.Locality, compared as Envoy compares
// them (region, zone, sub-zone).
type locality struct{ region, zone, subZone string }

// Healthy reports whether no health flag is set.
func (h *Host) Healthy() bool { return h.flags.Load() == 0 }

func (h *Host) setFlag(f uint32, on bool) {
	for {
		old := h.flags.Load()
		nw := old &^ f
		if on {
			nw = old | f
		}
		if h.flags.CompareAndSwap(old, nw) {
			return
		}
	}
}

// HealthString renders the flags as Envoy's /clusters health_flags
// (HostUtility::healthFlagsToString): each set flag's name, joined with
// nothing between, in the order of Envoy's HealthFlag enum
// (FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, FAILED_EDS_HEALTH, ...,
// PENDING_ACTIVE_HC, ..., EDS_STATUS_DRAINING), "healthy" when none is.
func (h *Host) HealthString() string {
	f := h.flags.Load()
	if f == 0 {
		return "healthy"
	}
	s := ""
	for _, n := range [...]struct {
		flag uint32
		name string
	}{
		{failedActiveHC, "/failed_active_hc"},
		{outlierEjected, "/failed_outlier_check"},
		{edsUnhealthy, "/failed_eds_health"},
		{pendingActiveHC, "/pending_active_hc"},
		{edsDraining, "/eds_status_draining"},
	} {
		if f&n.flag != 0 {
			s += n.name
		}
	}
	return s
}

// Locality is the host's EDS locality (region, zone, sub-zone), empty for
// a host of a cluster of another type.
func (h *Host) Locality() (region, zone, subZone string) {
	return h.locality.region, h.locality.zone, h.locality.subZone
}

// Weight is the host's load-balancing weight.
func (h *Host) Weight() uint32 { return h.weight.Load() }

// newHost is a host at addr with weight w.
func newHost(addr string, w uint32) *Host {
	h := &Host{Addr: addr}
	h.weight.Store(w)
	return h
}

// RequestStarted and RequestDone keep per-host counts for least-request
// balancing and /clusters.
func (h *Host) RequestStarted() { h.rqActive.Add(1); h.rqTotal.Add(1) }

// hostSet is an immutable list of hosts plus the balancer state for it.
type hostSet struct {
	hosts    []*Host
	weighted bool // weights differ: use smooth weighted round robin
	mu       sync.Mutex
	cur      []int64 // smooth WRR current weights; protected by mu
}

func newHostSet(hosts []*Host) *hostSet {
	hs := &hostSet{hosts: hosts}
	for _, h := range hosts {
		if h.Weight() != hosts[0].Weight() {
			hs.weighted = true
			break
		}
	}
	if hs.weighted {
		hs.cur = make([]int64, len(hosts))
	}
	return hs
}

// HostStats is a point-in-time copy of a host's counters.
type HostStats struct {
	RqActive, RqTotal, RqSuccess, RqError, RqTimeout int64
	CxActive, CxTotal, CxConnectFail                 int64
}

// Snapshot copies the host's counters.
func (h *Host) Snapshot() HostStats {
	return HostStats{RqActive: h.rqActive.Load(), RqTotal: h.rqTotal.Load(), RqSuccess: h.rqSuccess.Load(),
		RqError: h.rqError.Load(), RqTimeout: h.rqTimeout.Load(), CxActive: h.cxActive.Load(),
		CxTotal: h.cxTotal.Load(), CxConnectFail: h.cxFail.Load()}
}
