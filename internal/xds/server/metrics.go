package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are the xDS server's Prometheus series, registered on the
// registry the caller passes in.
type metrics struct {
	writeToAck   *prometheus.HistogramVec // by type
	pushes       *prometheus.CounterVec   // by type
	inlinePushes prometheus.Counter
	acks         *prometheus.CounterVec // by type
	nacks        *prometheus.CounterVec // by type
	rejected     *prometheus.CounterVec // streams closed at identification, by gRPC code
	streams      prometheus.Gauge
	translations prometheus.Counter
	sharedEgress prometheus.Counter
	epUpdates    prometheus.Counter
	routeUpdates prometheus.Counter
	translateErr prometheus.Counter
	checks       prometheus.Counter
	recompute    prometheus.Histogram
	interned     prometheus.Gauge
	certIssued   prometheus.Counter
	// The push window's (window.go).
	pushesInFlight, pushesWaiting prometheus.Gauge
	pushesQueued, pushTimeouts    prometheus.Counter

	// pushesBy, acksBy and writeToAckBy are pushes', acks' and
	// writeToAck's series of each type, resolved once: a push and its
	// ACK look up no label.
	pushesBy, acksBy [numTypes]prometheus.Counter
	writeToAckBy     [numTypes]prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		writeToAck: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "weft", Subsystem: "xds", Name: "write_to_ack_seconds",
			Help: "Time from the store commit of a write to the ACK of the configuration it changed, per affected proxy and resource type.",
			// 250 µs to about 16 s.
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 17),
		}, []string{"type"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "pushes_total",
			Help: "Discovery responses sent, by resource type.",
		}, []string{"type"}),
		inlinePushes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "inline_pushes_total",
			Help: "Pushes to an idle stream sent without waking the stream's goroutine: by the fan-out that delivered the snapshot, or by the goroutine that freed a slot of the push window.",
		}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "acks_total",
			Help: "Discovery responses ACKed, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "nacks_total",
			Help: "Discovery responses rejected (NACKed), by resource type.",
		}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "streams_rejected_total",
			Help: "Streams refused or closed when the proxy identified itself, by gRPC code (InvalidArgument: malformed node id; NotFound: unknown mesh or resource; ResourceExhausted: too many streams for the server or the identity).",
		}, []string{"code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "weft", Subsystem: "xds", Name: "streams",
			Help: "Open ADS streams.",
		}),
		translations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "translations_total",
			Help: "Proxy configurations translated whole.",
		}),
		sharedEgress: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "shared_egress_total",
			Help: "Translations that took their egress (listener 15001, route tables, egress clusters) from another node's translation in the same batch, whose backends, backend defaults, logging and IP preference are the same.",
		}),
		epUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "endpoint_updates_total",
			Help: "Proxy configurations recomputed by rebuilding only the ClusterLoadAssignments whose Cloud Map endpoints changed, without a translation.",
		}),
		routeUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "route_updates_total",
			Help: "Proxy configurations recomputed by assembling only the route tables whose virtual hosts a route write changed (weights, match, timeouts, retries), without a translation.",
		}),
		translateErr: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "translation_errors_total",
			Help: "Proxy configurations that failed translation or validation; the proxy keeps its previous configuration.",
		}),
		checks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "resource_checks_total",
			Help: "Distinct resources deep-validated; a resource is validated once, however many proxies it serves.",
		}),
		recompute: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "weft", Subsystem: "xds", Name: "recompute_seconds",
			Help:    "Time the xDS core spent on one batch of store changes, from receipt to snapshots handed to streams.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
		}),
		interned: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "weft", Subsystem: "xds", Name: "interned_resources",
			Help: "Distinct Envoy resources held; identical resources of different proxies are held once.",
		}),
		certIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "certificates_issued_total",
			Help: "Leaf certificates issued to proxies: first issue, renewal at two thirds of the lifetime, new signing root or new DNS names.",
		}),
		pushesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "weft", Subsystem: "xds", Name: "pushes_in_flight",
			Help: "Streams sent a write's push and not yet answered: slots of the push window (--xds-max-pushes-in-flight) held.",
		}),
		pushesWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "weft", Subsystem: "xds", Name: "pushes_waiting",
			Help: "Streams owed a write's push, waiting for a slot of the push window.",
		}),
		pushesQueued: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "pushes_queued_total",
			Help: "Pushes that waited for a slot of the push window because it was full.",
		}),
		pushTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "xds", Name: "push_timeouts_total",
			Help: "Slots of the push window freed because the proxy did not answer its push within the push timeout.",
		}),
	}
	for t := range numTypes {
		m.pushesBy[t] = m.pushes.WithLabelValues(typeName(t))
		m.acksBy[t] = m.acks.WithLabelValues(typeName(t))
		m.writeToAckBy[t] = m.writeToAck.WithLabelValues(typeName(t))
	}
	if reg != nil {
		reg.MustRegister(m.writeToAck, m.pushes, m.inlinePushes, m.acks, m.nacks, m.rejected, m.streams,
			m.translations, m.sharedEgress, m.epUpdates, m.routeUpdates, m.translateErr, m.checks, m.recompute, m.interned, m.certIssued,
			m.pushesInFlight, m.pushesWaiting, m.pushesQueued, m.pushTimeouts)
	}
	return m
}
