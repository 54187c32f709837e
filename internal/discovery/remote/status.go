package remote

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/discovery"
)

// Status is GET /v1/discovery's answer.
type Status struct {
	IntervalSeconds float64 `json:"intervalSeconds"`
	// Rounds counts the completed polling rounds since the server started.
	Rounds   int64           `json:"rounds"`
	Remotes  []RemoteStatus  `json:"remotes"`
	Services []ServiceStatus `json:"services"`
}

// RemoteStatus sums up one remote.
type RemoteStatus struct {
	Name       string   `json:"name"`
	Endpoint   string   `json:"endpoint,omitempty"`
	Region     string   `json:"region,omitempty"`
	Namespaces []string `json:"namespaces"`
	// Services counts the followed services by state.
	Services map[string]int `json:"services"`
}

// Status returns the last round's state of every followed service.
func (f *Follower) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := Status{IntervalSeconds: f.cfg.Interval.Seconds(), Rounds: f.rounds, Remotes: []RemoteStatus{}, Services: []ServiceStatus{}}
	for _, r := range f.cfg.Remotes {
		out.Remotes = append(out.Remotes, RemoteStatus{Name: r.Name, Endpoint: r.Endpoint, Region: r.Region, Namespaces: r.Namespaces, Services: map[string]int{}})
	}
	for _, s := range f.status {
		out.Services = append(out.Services, *s)
		for i := range out.Remotes {
			if out.Remotes[i].Name == s.Remote {
				out.Remotes[i].Services[s.State]++
			}
		}
	}
	slices.SortFunc(out.Services, func(a, b ServiceStatus) int {
		return compareRefs(discovery.ServiceRef{Namespace: a.Namespace, Service: a.Service}, discovery.ServiceRef{Namespace: b.Namespace, Service: b.Service})
	})
	return out
}

// Handler serves GET /v1/discovery: Status as JSON.
func (f *Follower) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(f.Status())
	})
}

// metrics are the follower's Prometheus series; their labels are bounded
// by the remotes configured and a fixed set of states and operations.
type metrics struct {
	requests *prometheus.CounterVec
	services *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_cloudmap_remote_requests_total",
			Help: "Requests to remote Cloud Maps, by remote, operation and outcome (ok, not_found, error).",
		}, []string{"remote", "operation", "outcome"}),
		services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_cloudmap_remote_services",
			Help: "Services followed in remote Cloud Maps after the last round, by remote and state (ok, unreachable: last endpoints kept, not-found, over-limit).",
		}, []string{"remote", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.services)
	}
	return m
}

func (m *metrics) request(remote, op string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if notFound(err) {
			outcome = "not_found"
		}
	}
	m.requests.WithLabelValues(remote, op, outcome).Inc()
}

func (m *metrics) set(remotes []Remote, status map[discovery.ServiceRef]*ServiceStatus) {
	for _, r := range remotes {
		counts := map[string]int{}
		for _, s := range status {
			if s.Remote == r.Name {
				counts[s.State]++
			}
		}
		for _, st := range []string{StateOK, StateUnreachable, StateNotFound, StateOverLimit} {
			m.services.WithLabelValues(r.Name, st).Set(float64(counts[st]))
		}
	}
}
