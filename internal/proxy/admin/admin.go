// Package admin serves weft proxy's admin endpoints in the shapes Envoy's
// admin interface uses, so health checks, dashboards and scripts written
// for App Mesh's Envoy keep working: /ready, /server_info, /stats,
// /stats/prometheus, /config_dump, /clusters, /listeners, /memory.
package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"regexp"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Source is what the admin endpoints read.
type Source struct {
	Node      *corev3.Node
	Version   string
	Start     time.Time
	Live      func() bool
	Stats     *stats.Store
	Clusters  func() map[string]*cluster.Cluster
	Listeners func() map[string]string // name -> bound address
	// ConfigDump returns Envoy's /config_dump JSON; includeEDS adds the
	// endpoint config.
	ConfigDump func(includeEDS bool) ([]byte, error)
	// Pprof adds Go's /debug/pprof/ profiles (weft proxy --pprof).
	Pprof bool
}

// Handler returns the admin HTTP handler.
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	handleStats(mux, src)
	mux.HandleFunc("GET /server_info", func(w http.ResponseWriter, r *http.Request) {
		up := time.Since(src.Start).Truncate(time.Second)
		node, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(src.Node)
		out := map[string]any{
			"version":             src.Version,
			"state":               state(src),
			"hot_restart_version": "disabled",
			"command_line_options": map[string]any{
				"concurrency": 0, "mode": "Serve", "disable_hot_restart": true,
			},
			"node":                 json.RawMessage(node),
			"uptime_current_epoch": fmt.Sprintf("%ds", int(up.Seconds())),
			"uptime_all_epochs":    fmt.Sprintf("%ds", int(up.Seconds())),
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		b, err := src.ConfigDump(r.URL.Query().Has("include_eds"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /clusters", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "json" {
			writeJSON(w, clustersJSON(src.Clusters()))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		writeClusters(w, src.Clusters())
	})
	mux.HandleFunc("GET /listeners", func(w http.ResponseWriter, r *http.Request) {
		ls := src.Listeners()
		names := make([]string, 0, len(ls))
		for n := range ls {
			names = append(names, n)
		}
		sort.Strings(names)
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		for _, n := range names {
			fmt.Fprintf(w, "%s::%s\n", n, ls[n])
		}
	})
	mux.HandleFunc("GET /memory", handleMemory)
	if src.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "weft proxy admin: /ready /server_info /stats /stats/prometheus /config_dump /clusters /listeners /memory")
	})
	return mux
}

// StatsHandler serves only /ready, /stats and /stats/prometheus: what a
// health probe and a metrics scraper need, nothing of the configuration.
// weft proxy serves it on --stats-addr, which may face the network while
// the admin listener stays on loopback.
func StatsHandler(src Source) http.Handler {
	mux := http.NewServeMux()
	handleStats(mux, src)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "weft proxy stats: /ready /stats /stats/prometheus")
	})
	return mux
}

func state(src Source) string {
	if src.Live() {
		return "LIVE"
	}
	return "PRE_INITIALIZING"
}

// handleStats adds /ready, /stats and /stats/prometheus to mux.
func handleStats(mux *http.ServeMux, src Source) {
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		if !src.Live() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, state(src))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		filter, err := filterOf(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		used := r.URL.Query().Has("usedonly")
		switch r.URL.Query().Get("format") {
		case "json":
			w.Header().Set("Content-Type", "application/json")
			_ = src.Stats.WriteJSON(w, filter, used)
		case "prometheus":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_ = src.Stats.WritePrometheus(w, filter, used)
		case "", "text":
			w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
			_ = src.Stats.WriteText(w, filter, used)
		default:
			http.Error(w, "unknown format", http.StatusBadRequest)
		}
	})
	mux.HandleFunc("GET /stats/prometheus", func(w http.ResponseWriter, r *http.Request) {
		filter, err := filterOf(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_ = src.Stats.WritePrometheus(w, filter, r.URL.Query().Has("usedonly"))
	})
}

func filterOf(r *http.Request) (*regexp.Regexp, error) {
	f := r.URL.Query().Get("filter")
	if f == "" {
		return nil, nil
	}
	re, err := regexp.Compile(f)
	if err != nil {
		return nil, fmt.Errorf("invalid filter regex: %w", err)
	}
	return re, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(v)
}

func sortedNames(cs map[string]*cluster.Cluster) []string {
	names := make([]string, 0, len(cs))
	for n := range cs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// writeClusters writes Envoy's /clusters text: circuit breaker settings
// per cluster, then per host counters, health flags, weight and EDS
// locality.
func writeClusters(w io.Writer, cs map[string]*cluster.Cluster) {
	var b strings.Builder
	for _, n := range sortedNames(cs) {
		c := cs[n]
		mc, mp, mr, mrt := c.Thresholds()
		for _, kv := range [][2]any{{"max_connections", mc}, {"max_pending_requests", mp}, {"max_requests", mr}, {"max_retries", mrt}} {
			fmt.Fprintf(&b, "%s::default_priority::%s::%d\n", n, kv[0], kv[1])
		}
		for _, kv := range [][2]any{{"max_connections", 1024}, {"max_pending_requests", 1024}, {"max_requests", 1024}, {"max_retries", 3}} {
			fmt.Fprintf(&b, "%s::high_priority::%s::%d\n", n, kv[0], kv[1])
		}
		fmt.Fprintf(&b, "%s::added_via_api::true\n", n)
		for _, h := range c.Hosts() {
			s := h.Snapshot()
			p := n + "::" + h.Addr + "::"
			fmt.Fprintf(&b, "%scx_active::%d\n%scx_connect_fail::%d\n%scx_total::%d\n", p, s.CxActive, p, s.CxConnectFail, p, s.CxTotal)
			fmt.Fprintf(&b, "%srq_active::%d\n%srq_error::%d\n%srq_success::%d\n%srq_timeout::%d\n%srq_total::%d\n",
				p, s.RqActive, p, s.RqError, p, s.RqSuccess, p, s.RqTimeout, p, s.RqTotal)
			if h.Hostname != "" {
				fmt.Fprintf(&b, "%shostname::%s\n", p, h.Hostname)
			}
			region, zone, subZone := h.Locality()
			fmt.Fprintf(&b, "%shealth_flags::%s\n%sweight::%d\n%sregion::%s\n%szone::%s\n%ssub_zone::%s\n%scanary::false\n%spriority::0\n%ssuccess_rate::-1\n%slocal_origin_success_rate::-1\n",
				p, h.HealthString(), p, h.Weight(), p, region, p, zone, p, subZone, p, p, p, p)
		}
	}
	_, _ = io.WriteString(w, b.String())
}

func clustersJSON(cs map[string]*cluster.Cluster) any {
	type localityJSON struct {
		Region  string `json:"region,omitempty"`
		Zone    string `json:"zone,omitempty"`
		SubZone string `json:"sub_zone,omitempty"`
	}
	type hostJSON struct {
		Address      string           `json:"address"`
		HealthStatus string           `json:"health_status"`
		Weight       uint32           `json:"weight"`
		Locality     localityJSON     `json:"locality"`
		Stats        map[string]int64 `json:"stats"`
	}
	type clusterJSON struct {
		Name         string     `json:"name"`
		AddedViaAPI  bool       `json:"added_via_api"`
		HostStatuses []hostJSON `json:"host_statuses"`
	}
	out := struct {
		ClusterStatuses []clusterJSON `json:"cluster_statuses"`
	}{}
	for _, n := range sortedNames(cs) {
		cj := clusterJSON{Name: n, AddedViaAPI: true, HostStatuses: []hostJSON{}}
		for _, h := range cs[n].Hosts() {
			s := h.Snapshot()
			var loc localityJSON
			loc.Region, loc.Zone, loc.SubZone = h.Locality()
			cj.HostStatuses = append(cj.HostStatuses, hostJSON{Address: h.Addr, HealthStatus: h.HealthString(), Weight: h.Weight(), Locality: loc,
				Stats: map[string]int64{"cx_active": s.CxActive, "cx_total": s.CxTotal, "rq_active": s.RqActive,
					"rq_error": s.RqError, "rq_success": s.RqSuccess, "rq_timeout": s.RqTimeout, "rq_total": s.RqTotal}})
		}
		out.ClusterStatuses = append(out.ClusterStatuses, cj)
	}
	return out
}
