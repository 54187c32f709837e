package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Stats are a cluster's Envoy stats (cluster.<name>.*).
type Stats struct {
	scope                         stats.Scope
	RqTotal, RqCompleted          *stats.Counter
	RqActive                      *stats.Gauge
	RqTimeout, RqPerTryTimeout    *stats.Counter
	RqRetry, RqRetrySuccess       *stats.Counter
	RqRetryOverflow, RqRetryLimit *stats.Counter
	// RetryAbandoned is retry_or_shadow_abandoned: requests whose body
	// outgrew route.MaxRetryBuffer while a retry could still come, so
	// that none did (Envoy's Filter::decodeData counts it in the
	// cluster's stats).
	RetryAbandoned                 *stats.Counter
	RqPendingOverflow, RqPendingTo *stats.Counter
	RqPendingActive                *stats.Gauge
	CxTotal, CxConnectFail         *stats.Counter
	CxConnectTimeout, CxOverflow   *stats.Counter
	CxActive                       *stats.Gauge
	CxNoneHealthy, LbHealthyPanic  *stats.Counter
	RqRxReset, RqTxReset           *stats.Counter
	// CxProtocolError counts the connections failed for the upstream's
	// protocol error: HTTP/2 ones here (h2conn.go), HTTP/1.1 ones by
	// the stream that saw their response fail (httpconn's classify and
	// upstreamBody.Read).
	CxProtocolError *stats.Counter
	// RqTime is upstream_rq_time (ms from the first attempt to the end
	// of the response), recorded by the HTTP connection manager.
	RqTime                        *stats.Histogram
	CxConnectMs, CxLengthMs       *stats.Histogram
	codes                         *[600]atomic.Pointer[stats.Counter]
	classes                       [6]*stats.Counter
	hcAttempt, hcSuccess, hcFail  *stats.Counter
	hcNetFail                     *stats.Counter
	odEjectTotal, odEjectEnforced *stats.Counter
	odEject5xx, odEjectGateway    *stats.Counter
	odDetected5xx, odDetectedGw   *stats.Counter
	odOverflow                    *stats.Counter
	membershipChange              *stats.Counter
	updateSuccess, updateEmpty    *stats.Counter
	updateAttempt, updateFailure  *stats.Counter

	// retried are the retry.upstream_rq_* counters (RetryResponse), made
	// at a cluster's first retried response.
	retried *atomic.Pointer[retriedStats]

	// dropped is upstream_rq_dropped (Dropped), which Envoy keeps in the
	// cluster's load report stats, a store of their own that /stats
	// does not show (ClusterInfoImpl's load_report_stats_store_): the
	// load report reads it, nothing else. Per cluster instance, as
	// Envoy's ClusterInfo: a rebuilt cluster counts from zero.
	dropped *atomic.Int64
}

func newStats(st *stats.Store, name string) Stats {
	sc := st.Scope("cluster."+name+".", "envoy_cluster_", stats.Label{Name: "envoy_cluster_name", Value: name})
	s := Stats{scope: sc, codes: new([600]atomic.Pointer[stats.Counter]), retried: new(atomic.Pointer[retriedStats]), dropped: new(atomic.Int64),
		RqTotal: sc.Counter("upstream_rq_total"), RqCompleted: sc.Counter("upstream_rq_completed"),
		RqActive: sc.Gauge("upstream_rq_active"), RqTimeout: sc.Counter("upstream_rq_timeout"),
		RqPerTryTimeout: sc.Counter("upstream_rq_per_try_timeout"), RqRetry: sc.Counter("upstream_rq_retry"),
		RqRetrySuccess: sc.Counter("upstream_rq_retry_success"), RqRetryOverflow: sc.Counter("upstream_rq_retry_overflow"),
		RqRetryLimit:      sc.Counter("upstream_rq_retry_limit_exceeded"),
		RetryAbandoned:    sc.Counter("retry_or_shadow_abandoned"),
		RqPendingOverflow: sc.Counter("upstream_rq_pending_overflow"), RqPendingTo: sc.Counter("upstream_rq_pending_total"),
		RqPendingActive: sc.Gauge("upstream_rq_pending_active"), CxTotal: sc.Counter("upstream_cx_total"),
		CxConnectFail: sc.Counter("upstream_cx_connect_fail"), CxConnectTimeout: sc.Counter("upstream_cx_connect_timeout"),
		CxOverflow: sc.Counter("upstream_cx_overflow"), CxActive: sc.Gauge("upstream_cx_active"),
		CxNoneHealthy: sc.Counter("upstream_cx_none_healthy"), LbHealthyPanic: sc.Counter("lb_healthy_panic"),
		RqRxReset: sc.Counter("upstream_rq_rx_reset"), RqTxReset: sc.Counter("upstream_rq_tx_reset"),
		CxProtocolError: sc.Counter("upstream_cx_protocol_error"),
		hcAttempt:       sc.Counter("health_check.attempt"), hcSuccess: sc.Counter("health_check.success"),
		hcFail: sc.Counter("health_check.failure"), hcNetFail: sc.Counter("health_check.network_failure"),
		odEjectTotal: sc.Counter("outlier_detection.ejections_total"), odEjectEnforced: sc.Counter("outlier_detection.ejections_enforced_total"),
		odEject5xx: sc.Counter("outlier_detection.ejections_enforced_consecutive_5xx"), odEjectGateway: sc.Counter("outlier_detection.ejections_enforced_consecutive_gateway_failure"),
		odDetected5xx: sc.Counter("outlier_detection.ejections_detected_consecutive_5xx"), odDetectedGw: sc.Counter("outlier_detection.ejections_detected_consecutive_gateway_failure"),
		odOverflow:       sc.Counter("outlier_detection.ejections_overflow"),
		membershipChange: sc.Counter("membership_change"), updateSuccess: sc.Counter("update_success"),
		updateEmpty: sc.Counter("update_empty"), updateAttempt: sc.Counter("update_attempt"),
		updateFailure: sc.Counter("update_failure"),
		RqTime:        sc.Histogram("upstream_rq_time"), CxConnectMs: sc.Histogram("upstream_cx_connect_ms"),
		CxLengthMs: sc.Histogram("upstream_cx_length_ms"),
	}
	for i := 1; i <= 5; i++ {
		s.classes[i] = sc.TaggedCounter(fmt.Sprintf("upstream_rq_%dxx", i), "upstream_rq_xx",
			stats.Label{Name: "envoy_response_code_class", Value: strconv.Itoa(i)})
	}
	return s
}

// Response counts one upstream response status.
func (s *Stats) Response(code int) {
	if code < 100 || code >= 600 {
		return
	}
	s.codeCounter(&s.codes[code], "", code).Inc()
	s.classes[code/100].Inc()
	s.RqCompleted.Inc()
}

// Dropped counts a request the router answered 503 without sending it,
// as Envoy's router charges it as dropped besides its 503
// (Filter::chargeUpstreamCode with dropped: an overflow of the circuit
// breakers, never retried, Filter::onUpstreamReset; maintenance mode,
// which weft proxy cannot set). Not a 503 for no healthy upstream, which
// Envoy charges without it.
func (s *Stats) Dropped() { s.dropped.Add(1) }

// DroppedTotal is the count of Dropped since the cluster was built: the
// load report's total_dropped_requests is its growth.
func (s *Stats) DroppedTotal() int64 { return s.dropped.Load() }

// retriedStats are a cluster's counts of retried responses: its
// retry.upstream_rq_<code>, retry.upstream_rq_<class>xx and
// retry.upstream_rq_completed.
type retriedStats struct {
	codes     [600]atomic.Pointer[stats.Counter]
	classes   [6]*stats.Counter
	completed *stats.Counter
}

// RetryResponse counts one upstream response status the router retries,
// as Envoy's router charges it (Filter::onUpstreamHeaders:
// chargeBasicResponseStat with the prefix retry) in place of Response:
// the request's answer is counted once, by Response.
func (s *Stats) RetryResponse(code int) {
	if code < 100 || code >= 600 {
		return
	}
	r := s.retried.Load()
	if r == nil {
		r = &retriedStats{completed: s.scope.Counter("retry.upstream_rq_completed")}
		for i := 1; i <= 5; i++ {
			r.classes[i] = s.scope.TaggedCounter(fmt.Sprintf("retry.upstream_rq_%dxx", i), "retry_upstream_rq_xx",
				stats.Label{Name: "envoy_response_code_class", Value: strconv.Itoa(i)})
		}
		if !s.retried.CompareAndSwap(nil, r) {
			r = s.retried.Load() // the store gives both the same counters
		}
	}
	s.codeCounter(&r.codes[code], "retry.", code).Inc()
	r.classes[code/100].Inc()
	r.completed.Inc()
}

// codeCounter returns the counter of status code in slot, made on first
// use: <prefix>upstream_rq_<code>, tagged with the code for Prometheus
// (the prefix "retry." names retry_upstream_rq).
func (s *Stats) codeCounter(slot *atomic.Pointer[stats.Counter], prefix string, code int) *stats.Counter {
	if c := slot.Load(); c != nil {
		return c
	}
	c := s.scope.TaggedCounter(prefix+"upstream_rq_"+strconv.Itoa(code), strings.ReplaceAll(prefix, ".", "_")+"upstream_rq",
		stats.Label{Name: "envoy_response_code", Value: strconv.Itoa(code)})
	slot.Store(c)
	return c
}
