package proxy

// This file applies what the xDS client hands over (xdsclient.Handler):
// each type is built completely, swapped in, and what it replaced is
// stopped; what cannot be built is returned as the NACK's error.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// Clusters implements xdsclient.Handler (CDS).
func (p *Proxy) Clusters(ctx context.Context, version string, cs []*clusterv3.Cluster) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cds := p.Stats.Scope("cluster_manager.cds.", "envoy_cluster_manager_cds_")
	eds, err := p.clusters.Apply(cs)
	defer p.retainTLS()
	if err != nil {
		cds.Counter("update_rejected").Inc()
		return nil, err
	}
	cds.Counter("update_success").Inc()
	p.warm(false)
	p.gotCDS = true
	p.edsWant = eds
	p.accepted("cds", version)
	return eds, nil
}

// Endpoints implements xdsclient.Handler (EDS).
func (p *Proxy) Endpoints(ctx context.Context, version string, es []*endpointv3.ClusterLoadAssignment) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.clusters.SetEndpoints(es); err != nil {
		return err
	}
	p.accepted("eds", version)
	return nil
}

// Routes implements xdsclient.Handler (RDS).
func (p *Proxy) Routes(ctx context.Context, version string, rs []*routev3.RouteConfiguration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	rds := p.Stats.Scope("http.rds.", "envoy_http_rds_")
	next := make(map[string]*route.Config, len(rs))
	pbs := make(map[string]*routev3.RouteConfiguration, len(rs))
	cur := *p.routes.Load()
	var errs []error
	for _, r := range rs {
		if c, ok := cur[r.GetName()]; ok && proto.Equal(p.rpb[r.GetName()], r) {
			next[r.GetName()], pbs[r.GetName()] = c, r
			continue
		}
		c, err := route.Compile(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[r.GetName()], pbs[r.GetName()] = c, r
	}
	if len(errs) > 0 {
		rds.Counter("update_rejected").Inc()
		return errors.Join(errs...)
	}
	p.routes.Store(&next)
	p.rpb = pbs
	rds.Counter("update_success").Inc()
	p.accepted("rds", version)
	return nil
}

// Listeners implements xdsclient.Handler (LDS): build every listener,
// bind new sockets, then swap; on any failure close what was bound and
// keep the old set.
func (p *Proxy) Listeners(ctx context.Context, version string, ls []*listenerv3.Listener) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.retainTLS()
	lds := p.Stats.Scope("listener_manager.lds.", "envoy_listener_manager_lds_")
	lm := p.Stats.Scope("listener_manager.", "envoy_listener_manager_")
	deps := httpconn.Deps{Routes: p, Clusters: p.clusters, Sinks: p.sinks, Stats: p.Stats, Server: p.server, Log: p.log,
		RequestHeadersTimeout: p.cfg.RequestHeadersTimeout, Prepend: p.tracingFilters}
	type plan struct {
		cfg      *listener.Config
		reuse    *listener.Listener // same address: swap config
		keep     bool               // unchanged
		drainAll bool               // more than the filter chains changed
		rds      []string
	}
	plans := map[string]*plan{}
	var errs []error
	for _, l := range ls {
		if _, dup := plans[l.GetName()]; dup {
			errs = append(errs, fmt.Errorf("listener %s: duplicate name", l.GetName()))
			continue
		}
		old := p.listeners[l.GetName()]
		if old != nil && proto.Equal(p.lpb[l.GetName()], l) {
			plans[l.GetName()] = &plan{reuse: old, keep: true, rds: rdsOf(old.Config())}
			continue
		}
		cfg, rds, err := buildListener(l, deps, p.clusters, p.tls)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cfg.MaxConnections = p.cfg.ListenerMaxConnections
		cfg.DrainTime = p.cfg.DrainTime
		if !p.cfg.Goroutines && runtime.GOOS == "linux" { // no loops elsewhere: nothing to log
			var why string
			if cfg.Loops, why = loopsFor(cfg, p.clusters, !p.cfg.H2Goroutines); cfg.Loops == nil {
				p.log.Info("listener stays off the event loops", "listener", cfg.Name, "why", why)
			} else {
				on, all := cfg.Loops.Served(cfg)
				p.log.Info("listener on the event loops", "listener", cfg.Name, "chains", on, "of", all)
			}
		}
		pl := &plan{cfg: cfg, rds: rds, drainAll: old != nil && !chainsOnly(p.lpb[l.GetName()], l)}
		if old != nil && old.ConfiguredAddr() == cfg.Addr {
			pl.reuse = old
		}
		plans[l.GetName()] = pl
	}
	if len(errs) > 0 {
		lds.Counter("update_rejected").Inc()
		return nil, errors.Join(errs...)
	}
	// A listener renamed in this update keeps the socket of the one it
	// replaces at the same address (binding anew would find it in use).
	claimed := map[*listener.Listener]bool{}
	for _, pl := range plans {
		if pl.reuse != nil {
			claimed[pl.reuse] = true
		}
	}
	for _, pl := range plans {
		if pl.reuse != nil || listener.PortOf(pl.cfg.Addr) == 0 {
			continue
		}
		for name, old := range p.listeners {
			if _, kept := plans[name]; !kept && !claimed[old] && old.ConfiguredAddr() == pl.cfg.Addr {
				// Envoy removes one listener and adds the other:
				// the old one's connections drain.
				pl.reuse, claimed[old], pl.drainAll = old, true, true
				break
			}
		}
	}
	// Bind the new sockets; a bind error rejects the whole update.
	bound := map[string]*listener.Listener{}
	for name, pl := range plans {
		if pl.reuse != nil {
			continue
		}
		nl, err := listener.Listen(pl.cfg, p.Stats, &p.ids, p.log)
		if err != nil {
			for _, b := range bound {
				b.Stop()
			}
			lds.Counter("update_rejected").Inc()
			lm.Counter("listener_create_failure").Inc()
			return nil, err
		}
		bound[name] = nl
	}
	next := map[string]*listener.Listener{}
	var rds []string
	for name, pl := range plans {
		rds = append(rds, pl.rds...)
		switch {
		case pl.keep:
			next[name] = pl.reuse
		case pl.reuse != nil:
			w := warming{cfg: pl.cfg, drainAll: pl.drainAll || p.warmL[name].drainAll}
			delete(p.warmL, name)
			if tlsReady(pl.cfg) {
				pl.reuse.Update(w.cfg, w.drainAll)
			} else {
				// As Envoy warms an updated listener: the configuration
				// in force serves until the new one's secrets arrive.
				p.warmL[name] = w
			}
			next[name] = pl.reuse
			lm.Counter("listener_modified").Inc()
		default:
			nl := bound[name]
			nl.Serve(ctx)
			next[name] = nl
			lm.Counter("listener_added").Inc()
		}
	}
	for _, old := range p.listeners {
		if !claimed[old] {
			old.Stop()
			lm.Counter("listener_removed").Inc()
		}
	}
	for name := range p.warmL {
		if pl, ok := plans[name]; !ok || pl.reuse == nil {
			delete(p.warmL, name)
		}
	}
	p.listeners = next
	p.lpb = map[string]*listenerv3.Listener{}
	for _, l := range ls {
		p.lpb[l.GetName()] = l
	}
	sort.Strings(rds)
	p.rdsWant = rds
	p.gotLDS = true
	p.warm(false)
	lds.Counter("update_success").Inc()
	p.accepted("lds", version)
	return rds, nil
}

// warming is an updated listener configuration waiting for its secrets.
type warming struct {
	cfg      *listener.Config
	drainAll bool // put in force with Update(cfg, true)
}

// chainsOnly reports whether the update from old to l changes nothing but
// the filter chains: Envoy then updates the listener in place and drains
// only the connections of the chains changed or removed; otherwise it
// replaces the listener and drains all of its connections.
func chainsOnly(old, l *listenerv3.Listener) bool {
	if old == nil {
		return false
	}
	a, b := proto.Clone(old).(*listenerv3.Listener), proto.Clone(l).(*listenerv3.Listener)
	for _, x := range []*listenerv3.Listener{a, b} {
		x.FilterChains, x.DefaultFilterChain = nil, nil
	}
	return proto.Equal(a, b)
}

func rdsOf(cfg *listener.Config) []string {
	var out []string
	add := func(ch *listener.Chain) {
		if ch == nil {
			return
		}
		if h, ok := ch.Handler.(*httpconn.HCM); ok && h.RDS != "" {
			out = append(out, h.RDS)
		}
	}
	for i := range cfg.Chains {
		add(&cfg.Chains[i])
	}
	add(cfg.Default)
	return out
}
