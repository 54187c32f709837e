package proxy

import (
	"encoding/json"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/proxy/admin"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
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

// The config dump is written in the JSON shape of Envoy's
// envoy.admin.v3.ConfigDump (proto field names, "@type" on each part and
// resource) without linking the admin protos, whose dependency graph
// (bootstrap and every extension it names) costs megabytes of resident
// memory in every proxy.
const adminType = "type.googleapis.com/envoy.admin.v3."

type dynamicResource struct {
	Name        string          `json:"name,omitempty"`
	VersionInfo string          `json:"version_info,omitempty"`
	Cluster     json.RawMessage `json:"cluster,omitempty"`
	Listener    json.RawMessage `json:"listener,omitempty"`
	RouteConfig json.RawMessage `json:"route_config,omitempty"`
	Endpoint    json.RawMessage `json:"endpoint_config,omitempty"`
	LastUpdated string          `json:"last_updated,omitempty"`
}

type listenerState struct {
	Name        string          `json:"name"`
	ActiveState dynamicResource `json:"active_state"`
}

// configDump returns the accepted resources as Envoy's /config_dump JSON.
func (p *Proxy) configDump(includeEDS bool) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := func(typ string) string {
		if t, ok := p.updated[typ]; ok {
			return t.UTC().Format(time.RFC3339Nano)
		}
		return ""
	}
	enc := func(m proto.Message) json.RawMessage {
		a, err := anypb.New(m)
		if err != nil {
			return nil
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
		if err != nil {
			return nil
		}
		return b
	}
	var clusters []dynamicResource
	all := p.clusters.All()
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		clusters = append(clusters, dynamicResource{VersionInfo: p.versions["cds"], Cluster: enc(tlsctx.RedactCluster(all[n].PB)), LastUpdated: ts("cds")})
	}
	var listeners []listenerState
	names = names[:0]
	for n := range p.lpb {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		listeners = append(listeners, listenerState{Name: n, ActiveState: dynamicResource{
			VersionInfo: p.versions["lds"], Listener: enc(tlsctx.RedactListener(p.lpb[n])), LastUpdated: ts("lds")}})
	}
	var routes []dynamicResource
	names = names[:0]
	for n := range p.rpb {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		routes = append(routes, dynamicResource{VersionInfo: p.versions["rds"], RouteConfig: enc(p.rpb[n]), LastUpdated: ts("rds")})
	}
	configs := []any{
		map[string]any{"@type": adminType + "BootstrapConfigDump", "bootstrap": map[string]any{"node": json.RawMessage(nodeJSON(p))},
			"last_updated": p.start.UTC().Format(time.RFC3339Nano)},
		map[string]any{"@type": adminType + "ClustersConfigDump", "version_info": p.versions["cds"], "dynamic_active_clusters": clusters},
		map[string]any{"@type": adminType + "ListenersConfigDump", "version_info": p.versions["lds"], "dynamic_listeners": listeners},
		map[string]any{"@type": adminType + "RoutesConfigDump", "dynamic_route_configs": routes},
	}
	configs = append(configs, p.secretsDump(enc))
	if includeEDS {
		var eps []dynamicResource
		las := p.clusters.Endpoints()
		sort.Slice(las, func(i, j int) bool { return las[i].GetClusterName() < las[j].GetClusterName() })
		for _, la := range las {
			eps = append(eps, dynamicResource{VersionInfo: p.versions["eds"], Endpoint: enc(la), LastUpdated: ts("eds")})
		}
		configs = append(configs, map[string]any{"@type": adminType + "EndpointsConfigDump", "dynamic_endpoint_configs": eps})
	}
	return json.MarshalIndent(map[string]any{"configs": configs}, "", " ")
}

func nodeJSON(p *Proxy) []byte {
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.node)
	return b
}

type secretResource struct {
	Name        string          `json:"name"`
	VersionInfo string          `json:"version_info,omitempty"`
	LastUpdated string          `json:"last_updated,omitempty"`
	Secret      json.RawMessage `json:"secret,omitempty"`
}

// secretsDump is Envoy's SecretsConfigDump of the secrets from SDS:
// active ones with their private keys redacted, and the ones still
// awaited as warming.
func (p *Proxy) secretsDump(enc func(proto.Message) json.RawMessage) map[string]any {
	active, warming := []secretResource{}, []secretResource{}
	for _, s := range p.tls.Secrets() {
		if s.Secret == nil {
			warming = append(warming, secretResource{Name: s.Name})
			continue
		}
		active = append(active, secretResource{Name: s.Name, VersionInfo: s.Version,
			LastUpdated: s.Updated.UTC().Format(time.RFC3339Nano), Secret: enc(tlsctx.RedactSecret(s.Secret))})
	}
	return map[string]any{"@type": adminType + "SecretsConfigDump", "dynamic_active_secrets": active, "dynamic_warming_secrets": warming}
}
