package evloop

import (
	"fmt"
	"strconv"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// counters are the stats a request updates, under weft proxy's names: the
// connection manager's (http.<prefix>.*) and the cluster's (cluster.<name>.*).
type counters struct {
	rqTotal, rqHTTP1, rqCompleted *stats.Counter
	rqHTTP2, prematureResets      *stats.Counter
	cxTotal, cxDestroy            *stats.Counter
	cxHTTP1, cxHTTP2              *stats.Counter // per connection: at its first request head, at its preface
	cxProtocolError, noRoute      *stats.Counter
	noCluster                     *stats.Counter
	rqHeaderTimeout               *stats.Counter
	rqIdleTimeout                 *stats.Counter // a stream reset by the stream idle timeout
	cxIdleTimeout, cxDrainClose   *stats.Counter
	rqRxReset                     *stats.Counter
	txFlushTimeout                *stats.Counter // http2.tx_flush_timeout, shared by every connection manager as Envoy's codec stats
	h2HeaderOverflow              *stats.Counter // http2.header_overflow, likewise
	cxActive                      *stats.Gauge
	rqTime                        *stats.Histogram
	classes                       [6]*stats.Counter
	clusters                      []clusterCounters
}

type clusterCounters struct {
	rqTotal, rqCompleted, cxTotal, cxConnectFail *stats.Counter
	cxConnectTimeout                             *stats.Counter // counted with cxConnectFail (connectTimedOut)
	rqTimeout                                    *stats.Counter // the route timeout, as the goroutine path counts it
	rqPendingOverflow                            *stats.Counter // HTTP/2 upstreams: every connection full (h2up_linux.go)
	// HTTP/2 upstreams, as Envoy's HTTP/2 pool counts them: a stream the
	// upstream reset (h2uPeerReset), one the proxy reset for the
	// upstream's protocol error, and a connection failed for it
	// (h2UpProtocolError).
	rqRxReset, rqTxReset, cxProtocolError *stats.Counter
	rqTime                                *stats.Histogram
	classes                               [6]*stats.Counter
}

func newCounters(st *stats.Store, prefix string, clusters []clusterDef) *counters {
	sc := st.Scope("http."+prefix+".", "envoy_http_", stats.Label{Name: "envoy_http_conn_manager_prefix", Value: prefix})
	c := &counters{
		rqTotal: sc.Counter("downstream_rq_total"), rqHTTP1: sc.Counter("downstream_rq_http1_total"),
		rqHTTP2: sc.Counter("downstream_rq_http2_total"), prematureResets: sc.Counter("downstream_rq_too_many_premature_resets"),
		rqCompleted: sc.Counter("downstream_rq_completed"), cxTotal: sc.Counter("downstream_cx_total"),
		cxDestroy: sc.Counter("downstream_cx_destroy"), cxHTTP1: sc.Counter("downstream_cx_http1_total"),
		cxHTTP2: sc.Counter("downstream_cx_http2_total"), cxProtocolError: sc.Counter("downstream_cx_protocol_error"),
		noRoute: sc.Counter("no_route"), noCluster: sc.Counter("no_cluster"),
		rqHeaderTimeout: sc.Counter("downstream_rq_header_timeout"), cxIdleTimeout: sc.Counter("downstream_cx_idle_timeout"),
		cxDrainClose: sc.Counter("downstream_cx_drain_close"), rqRxReset: sc.Counter("downstream_rq_rx_reset"),
		rqIdleTimeout: sc.Counter("downstream_rq_idle_timeout"), cxActive: sc.Gauge("downstream_cx_active"),
		rqTime:           sc.Histogram("downstream_rq_time"),
		txFlushTimeout:   st.Scope("http2.", "envoy_http2_").Counter("tx_flush_timeout"),
		h2HeaderOverflow: st.Scope("http2.", "envoy_http2_").Counter("header_overflow"),
	}
	for i := 1; i <= 5; i++ {
		c.classes[i] = sc.TaggedCounter(fmt.Sprintf("downstream_rq_%dxx", i), "downstream_rq_xx",
			stats.Label{Name: "envoy_response_code_class", Value: strconv.Itoa(i)})
	}
	for _, cd := range clusters {
		c.clusters = append(c.clusters, *newClusterCounters(st, cd.name))
	}
	return c
}

func newClusterCounters(st *stats.Store, name string) *clusterCounters {
	cs := st.Scope("cluster."+name+".", "envoy_cluster_", stats.Label{Name: "envoy_cluster_name", Value: name})
	cc := &clusterCounters{rqTotal: cs.Counter("upstream_rq_total"), rqCompleted: cs.Counter("upstream_rq_completed"),
		cxTotal: cs.Counter("upstream_cx_total"), cxConnectFail: cs.Counter("upstream_cx_connect_fail"),
		rqTimeout: cs.Counter("upstream_rq_timeout"), rqPendingOverflow: cs.Counter("upstream_rq_pending_overflow"),
		cxConnectTimeout: cs.Counter("upstream_cx_connect_timeout"), rqRxReset: cs.Counter("upstream_rq_rx_reset"),
		rqTxReset: cs.Counter("upstream_rq_tx_reset"), cxProtocolError: cs.Counter("upstream_cx_protocol_error"),
		rqTime: cs.Histogram("upstream_rq_time")}
	for i := 1; i <= 5; i++ {
		cc.classes[i] = cs.TaggedCounter(fmt.Sprintf("upstream_rq_%dxx", i), "upstream_rq_xx",
			stats.Label{Name: "envoy_response_code_class", Value: strconv.Itoa(i)})
	}
	return cc
}

func (c *counters) response(code int) {
	if code >= 100 && code < 600 {
		c.classes[code/100].Inc()
	}
	c.rqCompleted.Inc()
}

func (c *clusterCounters) response(code int) {
	if code >= 100 && code < 600 {
		c.classes[code/100].Inc()
	}
	c.rqCompleted.Inc()
}
