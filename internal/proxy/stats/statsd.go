package stats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// Sink limits and defaults.
const (
	// DefaultFlushInterval is how often counters and gauges are sent:
	// Envoy's stats_flush_interval default (5 s).
	DefaultFlushInterval = 5 * time.Second
	// DefaultSinkQueue bounds the histogram values waiting for the next
	// packet; more are dropped and counted in statsd_sink.dropped.
	DefaultSinkQueue = 8192
	// DefaultMaxPacket is the largest datagram sent: what fits a typical
	// 1500-byte MTU after IP and UDP headers, as StatsD clients use.
	DefaultMaxPacket = 1432
	// sinkWriteTimeout bounds one datagram write (a Unix socket whose
	// reader stalls would otherwise block the flusher).
	sinkWriteTimeout = 100 * time.Millisecond
)

// SinkConfig configures a StatsD or DogStatsD sink, as Envoy's
// envoy.stat_sinks.statsd and envoy.stat_sinks.dog_statsd.
type SinkConfig struct {
	// Network is "udp" (Address host:port) or "unixgram" (Address a
	// socket path, App Mesh's STATSD_SOCKET_PATH).
	Network, Address string
	// Dog sends DogStatsD: tag-extracted names with "|#tag:value" tags.
	// Otherwise plain StatsD with Envoy's full names.
	Dog bool
	// Prefix starts every name; "" is "envoy", as Envoy's sinks.
	Prefix string
	// FlushInterval, QueueSize and MaxPacket default to
	// DefaultFlushInterval, DefaultSinkQueue and DefaultMaxPacket.
	FlushInterval time.Duration
	QueueSize     int
	MaxPacket     int
}

type hsample struct {
	h *histo
	v uint64
}

// Sink sends a store's metrics to StatsD. Counters are sent as deltas and
// gauges as values every flush interval; each histogram value is sent as
// a timer ("|ms") at the next flush. Nothing on the request path waits for
// it: values go through a bounded queue and are dropped, and counted in
// statsd_sink.dropped, when it is full; failed writes are counted in
// statsd_sink.write_error.
type Sink struct {
	cfg      SinkConfig
	store    *Store
	conn     net.Conn
	q        chan hsample
	dropped  *Counter
	writeErr *Counter
	sent     *Counter
	log      *slog.Logger
	prev     map[*metric]int64 // last flushed counter values; owned by Run
}

// NewSink returns a sink for the store and registers it, so that
// histogram values start queueing; Run sends. The socket is opened here:
// a UDP or Unix datagram socket needs no peer to open, so an absent
// collector is not an error (its writes fail and are counted).
func (s *Store) NewSink(cfg SinkConfig, log *slog.Logger) (*Sink, error) {
	if cfg.Network != "udp" && cfg.Network != "unixgram" {
		return nil, fmt.Errorf("statsd sink: network %q: want udp or unixgram", cfg.Network)
	}
	if cfg.Address == "" {
		return nil, errors.New("statsd sink: no address")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "envoy"
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultSinkQueue
	}
	if cfg.MaxPacket <= 0 {
		cfg.MaxPacket = DefaultMaxPacket
	}
	conn, err := net.Dial(cfg.Network, cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("statsd sink: %w", err)
	}
	sc := s.Scope("statsd_sink.", "envoy_statsd_sink_")
	k := &Sink{cfg: cfg, store: s, conn: conn, q: make(chan hsample, cfg.QueueSize),
		dropped: sc.Counter("dropped"), writeErr: sc.Counter("write_error"), sent: sc.Counter("packets_sent"),
		log: log, prev: map[*metric]int64{}}
	s.sink.Store(k)
	return k, nil
}

// sample queues one histogram value, or drops it when the queue is full.
func (k *Sink) sample(h *histo, v uint64) {
	select {
	case k.q <- hsample{h, v}:
	default:
		k.dropped.Inc()
	}
}

// Run flushes every interval until ctx ends, then flushes once more and
// closes the socket.
func (k *Sink) Run(ctx context.Context) {
	t := time.NewTicker(k.cfg.FlushInterval)
	defer t.Stop()
	defer k.conn.Close()
	for {
		select {
		case <-ctx.Done():
			k.store.sink.CompareAndSwap(k, nil)
			k.Flush()
			return
		case <-t.C:
			k.Flush()
		}
	}
}

// Flush sends what changed since the last flush. Only Run and tests call it.
func (k *Sink) Flush() {
	p := &packer{k: k}
	for _, x := range k.store.snapshot(nil) {
		if x.m == k.dropped.m || x.m == k.sent.m || x.m == k.writeErr.m {
			continue // the sink's own health stays local
		}
		switch x.m.kind {
		case counterKind:
			d := x.v - k.prev[x.m]
			if d == 0 {
				continue
			}
			k.prev[x.m] = x.v
			p.add(k.line(x.m.name, x.m.dog, x.m.tags, strconv.FormatInt(d, 10), "c"))
		case gaugeKind:
			p.add(k.line(x.m.name, x.m.dog, x.m.tags, strconv.FormatInt(x.v, 10), "g"))
		}
	}
	for n := len(k.q); n > 0; n-- {
		s := <-k.q
		p.add(k.line(s.h.name, s.h.dog, s.h.labels, strconv.FormatUint(s.v, 10), "ms"))
	}
	p.flush()
}

// line renders one StatsD line.
func (k *Sink) line(name, dog string, tags []Label, value, typ string) string {
	var b strings.Builder
	b.WriteString(k.cfg.Prefix)
	b.WriteByte('.')
	if k.cfg.Dog && dog != "" {
		b.WriteString(dog)
	} else {
		b.WriteString(name)
	}
	b.WriteByte(':')
	b.WriteString(value)
	b.WriteByte('|')
	b.WriteString(typ)
	if k.cfg.Dog && len(tags) > 0 {
		b.WriteString("|#")
		for i, t := range tags {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(dogTag(t.Name))
			b.WriteByte(':')
			b.WriteString(strings.NewReplacer(",", "_", "|", "_", "\n", "_").Replace(t.Value))
		}
	}
	return b.String()
}

// dogTag turns a Prometheus label name back into Envoy's tag name:
// envoy_cluster_name -> envoy.cluster_name, appmesh_mesh -> appmesh.mesh.
func dogTag(n string) string {
	for _, p := range []string{"envoy_", "appmesh_"} {
		if strings.HasPrefix(n, p) {
			return p[:len(p)-1] + "." + n[len(p):]
		}
	}
	return n
}

// packer joins lines into datagrams of at most MaxPacket bytes.
type packer struct {
	k   *Sink
	buf []byte
}

func (p *packer) add(line string) {
	if len(p.buf) > 0 && len(p.buf)+1+len(line) > p.k.cfg.MaxPacket {
		p.flush()
	}
	if len(p.buf) > 0 {
		p.buf = append(p.buf, '\n')
	}
	p.buf = append(p.buf, line...)
}

func (p *packer) flush() {
	if len(p.buf) == 0 {
		return
	}
	_ = p.k.conn.SetWriteDeadline(time.Now().Add(sinkWriteTimeout))
	if _, err := p.k.conn.Write(p.buf); err != nil {
		p.k.writeErr.Inc()
		p.k.log.Debug("statsd sink write", "err", err)
	} else {
		p.k.sent.Inc()
	}
	p.buf = p.buf[:0]
}
