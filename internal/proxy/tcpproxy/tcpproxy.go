// Package tcpproxy is weft proxy's tcp_proxy network filter: it connects
// each accepted connection to a host of one cluster (or one of weighted
// clusters) and copies bytes both ways, with half-close and an idle
// timeout, keeping Envoy's tcp.<stat_prefix>.* stats and access logs.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Clusters looks up clusters by name.
type Clusters interface {
	Get(name string) *cluster.Cluster
}

type weighted struct {
	name   string
	weight uint32
}

// Proxy is one compiled TcpProxy. Immutable.
type Proxy struct {
	StatPrefix  string
	targets     []weighted
	total       uint32
	idle        time.Duration // 0: none
	maxAttempts int
	clusters    Clusters
	logs        []*accesslog.Logger

	cxTotal, cxNoRoute, rxBytes, txBytes, connectFail *stats.Counter
	cxActive                                          *stats.Gauge
}

// New compiles a TcpProxy; logs are its compiled access loggers.
func New(t *tcpv3.TcpProxy, path string, clusters Clusters, logs []*accesslog.Logger, st *stats.Store) (*Proxy, error) {
	if err := strict.Fields(t, path, "stat_prefix", "cluster", "weighted_clusters", "idle_timeout",
		"access_log", "max_connect_attempts"); err != nil {
		return nil, err
	}
	if t.GetStatPrefix() == "" {
		return nil, fmt.Errorf("%s: stat_prefix is required", path)
	}
	p := &Proxy{StatPrefix: t.GetStatPrefix(), idle: time.Hour, maxAttempts: 1, clusters: clusters, logs: logs}
	switch {
	case t.GetCluster() != "":
		p.targets = []weighted{{t.GetCluster(), 1}}
	case t.GetWeightedClusters() != nil:
		wp := path + ".weighted_clusters"
		if err := strict.Fields(t.GetWeightedClusters(), wp, "clusters"); err != nil {
			return nil, err
		}
		for i, c := range t.GetWeightedClusters().GetClusters() {
			if err := strict.Fields(c, strict.Join(wp, "clusters", i), "name", "weight"); err != nil {
				return nil, err
			}
			p.targets = append(p.targets, weighted{c.GetName(), c.GetWeight()})
		}
	default:
		return nil, fmt.Errorf("%s: cluster or weighted_clusters is required", path)
	}
	for _, w := range p.targets {
		p.total += w.weight
	}
	if p.total == 0 {
		return nil, fmt.Errorf("%s: the cluster weights sum to 0", path)
	}
	if d := t.GetIdleTimeout(); d != nil {
		p.idle = d.AsDuration()
	}
	if n := t.GetMaxConnectAttempts(); n != nil {
		p.maxAttempts = int(n.GetValue())
	}
	sc := st.Scope("tcp."+p.StatPrefix+".", "envoy_tcp_", stats.Label{Name: "envoy_tcp_prefix", Value: p.StatPrefix})
	p.cxTotal, p.cxNoRoute = sc.Counter("downstream_cx_total"), sc.Counter("downstream_cx_no_route")
	p.rxBytes, p.txBytes = sc.Counter("downstream_cx_rx_bytes_total"), sc.Counter("downstream_cx_tx_bytes_total")
	p.connectFail, p.cxActive = sc.Counter("upstream_connect_fail"), sc.Gauge("downstream_cx_active")
	return p, nil
}

func (p *Proxy) pick() string {
	if len(p.targets) == 1 {
		return p.targets[0].name
	}
	n := rand.Uint32N(p.total)
	for _, w := range p.targets {
		if n < w.weight {
			return w.name
		}
		n -= w.weight
	}
	return p.targets[len(p.targets)-1].name
}

// ServeConn implements listener.Handler. It returns when both directions
// are done or ctx ends.
func (p *Proxy) ServeConn(ctx context.Context, c *listener.Conn) {
	defer c.Close()
	p.cxTotal.Inc()
	p.cxActive.Inc()
	defer p.cxActive.Dec()
	e := accesslog.Entry{Start: time.Now(), RequestDuration: -1, ResponseDuration: -1,
		DownstreamRemote: c.Src.String(), DownstreamLocal: c.Dst.String(), DownstreamDirectPeer: c.Src.String(),
		ServerName: c.ServerName, ConnectionID: c.ID}
	defer func() {
		e.Duration = time.Since(e.Start)
		for _, l := range p.logs {
			l.Log(&e)
		}
	}()
	name := p.pick()
	e.UpstreamCluster = name
	cl := p.clusters.Get(name)
	if cl == nil {
		p.cxNoRoute.Inc()
		e.Flags |= accesslog.NoClusterFound
		return
	}
	var up net.Conn
	for attempt := 0; attempt < p.maxAttempts; attempt++ {
		var h *cluster.Host
		if cl.Type == cluster.OriginalDst {
			h = cl.OriginalDstHost(c.Dst.String())
		} else {
			var err error
			if h, err = cl.Pick(nil, 1); err != nil {
				e.Flags |= accesslog.NoHealthyUpstream
				return
			}
		}
		e.UpstreamHost = h.Addr
		h.RequestStarted()
		conn, err := cl.DialTCP(ctx, h)
		if err != nil {
			cl.RequestDone(h, 0, true, false)
			p.connectFail.Inc()
			if errors.Is(err, cluster.ErrOverflow) {
				e.Flags |= accesslog.UpstreamOverflow
				return
			}
			e.Flags |= accesslog.UpstreamConnectionFailure
			// Envoy's Filter::onGenericPoolFailure stores the pool's
			// transport failure reason in the connection's upstream
			// info, which a later attempt that connects leaves as it is.
			var ce *cluster.ConnectError
			if errors.As(err, &ce) {
				e.UpstreamFailure = route.ConnectFailed(ce.Err, ce.Timeout).Transport
			}
			continue
		}
		e.Flags &^= accesslog.UpstreamConnectionFailure
		up = conn
		defer cl.RequestDone(h, 200, false, false)
		break
	}
	if up == nil {
		return
	}
	defer up.Close()
	e.UpstreamLocalAddress = up.LocalAddr().String()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	var rx, tx int64
	go func() { // downstream -> upstream; ends on EOF or error, waited below
		defer wg.Done()
		rx = copyCounting(up, c, &last)
		closeWrite(up)
	}()
	go func() { // upstream -> downstream; ends on EOF or error, waited below
		defer wg.Done()
		tx = copyCounting(c, up, &last)
		closeWrite(c)
	}()
	go func() { wg.Wait(); close(done) }() // ends when both copies end
	var tick <-chan time.Time
	if p.idle > 0 {
		t := time.NewTicker(min(p.idle/4+time.Millisecond, time.Second))
		defer t.Stop()
		tick = t.C
	}
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			break loop
		case now := <-tick:
			if time.Duration(now.UnixNano()-last.Load()) >= p.idle {
				e.Flags |= accesslog.StreamIdleTimeout
				break loop
			}
		}
	}
	// Closing both ends unblocks the copies.
	_ = up.Close()
	_ = c.Close()
	<-done
	e.BytesReceived, e.BytesSent = rx, tx
	p.rxBytes.Add(rx)
	p.txBytes.Add(tx)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
