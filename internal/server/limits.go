package server

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of APILimits: what one client may hold of the API listener.
const (
	// DefaultAPIReadHeaderTimeout bounds the reading of a request's
	// headers, from the connection's first byte or the previous request.
	DefaultAPIReadHeaderTimeout = 10 * time.Second
	// DefaultAPIReadTimeout bounds the reading of a whole request, headers
	// and body (at most 1 MiB, see meshapi and cloudmapapi).
	DefaultAPIReadTimeout = 30 * time.Second
	// DefaultAPIIdleTimeout closes a keep-alive connection that sends no
	// new request.
	DefaultAPIIdleTimeout = 120 * time.Second
	// DefaultAPIWriteTimeout bounds the writing of a response, from the
	// end of its request's headers: a client that stops reading (a
	// pipelined list of Cloud Map instances, say) held its connection, a
	// slot of --api-max-conns and a goroutine for good. The streams that
	// write for longer (the console's events, a backup) set a deadline
	// per write.
	DefaultAPIWriteTimeout = 60 * time.Second
	// DefaultAPIMaxConns caps the open connections of peers other than
	// loopback.
	DefaultAPIMaxConns = 1024
	// DefaultAPILoopbackReserve is how many connections beyond the cap
	// loopback peers (a local health probe, the operator's CLI) may still
	// open when other peers fill it.
	DefaultAPILoopbackReserve = 16
	// DefaultXDSMaxConns caps the open connections to the xDS listener
	// from peers other than loopback: a proxy holds one (its ADS and LRS
	// streams share it), so this matches xdsserver.DefaultMaxStreams. A
	// refused connection is closed at once; weft proxy then tries the next
	// xDS address it was given.
	DefaultXDSMaxConns = 20000
	// DefaultXDSHandshakeTimeout bounds a new xDS connection's TLS and
	// HTTP/2 handshakes (grpc-go's default is 120 s). A peer that opens a
	// connection and sends nothing holds a slot of --xds-max-conns until
	// then, and a shutdown waits for it.
	DefaultXDSHandshakeTimeout = 10 * time.Second
)

// APILimits bound what clients can hold of the API listener. A zero field
// takes its default.
type APILimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	WriteTimeout      time.Duration
	MaxConns          int
	LoopbackReserve   int
}

func (l APILimits) withDefaults() APILimits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.ReadHeaderTimeout, DefaultAPIReadHeaderTimeout)
	def(&l.ReadTimeout, DefaultAPIReadTimeout)
	def(&l.IdleTimeout, DefaultAPIIdleTimeout)
	def(&l.WriteTimeout, DefaultAPIWriteTimeout)
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultAPIMaxConns
	}
	if l.LoopbackReserve < 0 {
		l.LoopbackReserve = 0
	} else if l.LoopbackReserve == 0 {
		l.LoopbackReserve = DefaultAPILoopbackReserve
	}
	return l
}

// newAPIServer is the API's http.Server with its timeouts.
func newAPIServer(h http.Handler, lim APILimits) *http.Server {
	lim = lim.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		IdleTimeout:       lim.IdleTimeout,
		WriteTimeout:      lim.WriteTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}

// capMetrics are a capped listener's series (weft_<subsystem>_connections
// and weft_<subsystem>_connections_rejected_total).
type capMetrics struct {
	conns    prometheus.Gauge
	rejected prometheus.Counter
}

// newCapMetrics registers the series of the listener named subsystem
// ("api", "xds"); refusal says in their help what a refused peer gets.
func newCapMetrics(reg prometheus.Registerer, subsystem, what, refusal string) *capMetrics {
	m := &capMetrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "weft", Subsystem: subsystem, Name: "connections",
			Help: "Open connections of the " + what + " listener.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: subsystem, Name: "connections_rejected_total",
			Help: "Connections to the " + what + " listener " + refusal + " because the connection cap was reached.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.conns, m.rejected)
	}
	return m
}

func newAPIMetrics(reg prometheus.Registerer) *capMetrics {
	return newCapMetrics(reg, "api", "API", "closed at once with a 503")
}

func newXDSMetrics(reg prometheus.Registerer) *capMetrics {
	return newCapMetrics(reg, "xds", "xDS", "closed at once")
}

// capListener caps the open connections of a listener. Up to max
// connections are accepted from anyone; beyond, only loopback peers, up to
// max+reserve. A connection over the cap is sent refusal (when not empty)
// and closed at once rather than left in the kernel's backlog, so a
// refused client knows at once and the listener keeps accepting (and so
// answering loopback peers) whatever the others do.
type capListener struct {
	net.Listener
	max, reserve int64
	refusal      []byte
	open         atomic.Int64
	m            *capMetrics
}

// newCapListener caps the API listener: a refused peer reads a 503.
func newCapListener(ln net.Listener, lim APILimits, m *capMetrics) *capListener {
	lim = lim.withDefaults()
	return &capListener{Listener: ln, max: int64(lim.MaxConns), reserve: int64(lim.LoopbackReserve), refusal: []byte(overCapResponse), m: m}
}

// newXDSCapListener caps the xDS listener at max connections (zero:
// DefaultXDSMaxConns) plus the API's loopback reserve. A refused peer is
// only closed: it speaks HTTP/2 (and maybe TLS), so no answer written
// before its handshake would mean anything to it.
func newXDSCapListener(ln net.Listener, max int, m *capMetrics) *capListener {
	if max <= 0 {
		max = DefaultXDSMaxConns
	}
	return &capListener{Listener: ln, max: int64(max), reserve: DefaultAPILoopbackReserve, m: m}
}

// overCapResponse is written to a connection refused at the cap.
const overCapResponse = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nx-amzn-ErrorType: ServiceUnavailableException\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 58\r\n\r\n{\"message\":\"too many connections to the API, retry later\"}"

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		n := l.open.Add(1)
		if n > l.max && (n > l.max+l.reserve || !isLoopback(c.RemoteAddr())) {
			l.open.Add(-1)
			l.m.rejected.Inc()
			if len(l.refusal) > 0 {
				// A fresh socket's send buffer takes the answer at once;
				// the deadline only guards against the impossible.
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write(l.refusal)
			}
			c.Close()
			continue
		}
		l.m.conns.Inc()
		return &capConn{Conn: c, l: l}, nil
	}
}

// isLoopback reports whether an address (a peer's, a listener's) is a
// loopback one.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// capConn gives its slot back when closed.
type capConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.m.conns.Dec()
	})
	return err
}
