package proxy

import (
	"sort"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weftmesh/weft/internal/proxy/admin"
	"github.com/weftmesh/weft/internal/proxy/cluster"
)

func (p *Proxy) adminSource() admin.Source {
	return admin.Source{
		Node: p.node, Version: Version, Start: p.start, Stats: p.Stats,
		Live:     p.live.Load,
		Clusters: func() map[string]*cluster.Cluster { return p.clusters.All() },
		Listeners: func() map[string]string {
			p.mu.Lock()
			defer p.mu.Unlock()
			out := map[string]string{}
			for n, l := range p.listeners {
				out[n] = l.Addr().String()
			}
			return out
		},
		ConfigDump: p.configDump,
		Pprof:      p.cfg.Pprof,
	}
}

// configDump returns the accepted resources as Envoy's ConfigDump.
func (p *Proxy) configDump(includeEDS bool) proto.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := func(typ string) *timestamppb.Timestamp {
		if t, ok := p.updated[typ]; ok {
			return timestamppb.New(t)
		}
		return timestamppb.New(time.Time{})
	}
	pack := func(m proto.Message) *anypb.Any {
		a, _ := anypb.New(m) // marshalling accepted resources cannot fail
		return a
	}
	boot := &adminv3.BootstrapConfigDump{LastUpdated: timestamppb.New(p.start)}
	cds := &adminv3.ClustersConfigDump{VersionInfo: p.versions["cds"]}
	names := make([]string, 0)
	all := p.clusters.All()
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cds.DynamicActiveClusters = append(cds.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: p.versions["cds"], Cluster: pack(all[n].PB), LastUpdated: ts("cds")})
	}
	lds := &adminv3.ListenersConfigDump{VersionInfo: p.versions["lds"]}
	lnames := make([]string, 0, len(p.lpb))
	for n := range p.lpb {
		lnames = append(lnames, n)
	}
	sort.Strings(lnames)
	for _, n := range lnames {
		lds.DynamicListeners = append(lds.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
			Name: n, ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{
				VersionInfo: p.versions["lds"], Listener: pack(p.lpb[n]), LastUpdated: ts("lds")}})
	}
	rds := &adminv3.RoutesConfigDump{}
	rnames := make([]string, 0, len(p.rpb))
	for n := range p.rpb {
		rnames = append(rnames, n)
	}
	sort.Strings(rnames)
	for _, n := range rnames {
		rds.DynamicRouteConfigs = append(rds.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: p.versions["rds"], RouteConfig: pack(p.rpb[n]), LastUpdated: ts("rds")})
	}
	out := &adminv3.ConfigDump{Configs: []*anypb.Any{pack(boot), pack(cds), pack(lds), pack(rds)}}
	if includeEDS {
		eds := &adminv3.EndpointsConfigDump{}
		las := p.clusters.Endpoints()
		sort.Slice(las, func(i, j int) bool { return las[i].GetClusterName() < las[j].GetClusterName() })
		for _, la := range las {
			eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
				VersionInfo: p.versions["eds"], EndpointConfig: pack(la), LastUpdated: ts("eds")})
		}
		out.Configs = append(out.Configs, pack(eds))
	}
	return out
}
