package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// Manager owns every cluster of a proxy. Get is safe on the request path;
// Apply and SetEndpoints are called by one goroutine (the xDS client).
type Manager struct {
	log   *slog.Logger
	stats *stats.Store
	ctx   context.Context // parent of every cluster's background work
	tls   *tlsctx.Store   // certificates of upstream TLS; nil refuses it

	clusters atomic.Pointer[map[string]*Cluster]

	mu        sync.Mutex                                   // serialises Apply, SetEndpoints, Close
	endpoints map[string]*endpointv3.ClusterLoadAssignment // last accepted, by cluster name; protected by mu
	// withdrawn names the clusters whose assignment the last complete
	// set left out while the cluster stayed (a delta removal): it keeps
	// its hosts, as Envoy's does; protected by mu.
	withdrawn map[string]bool
	// warming holds updated clusters waiting for their TLS secrets while
	// the version they replace keeps serving, as Envoy warms clusters;
	// protected by mu.
	warming map[string]*Cluster

	gone *goneHooks // OnHostsGone's; every cluster Apply builds tells them
}

// goneHooks are the functions OnHostsGone registered.
type goneHooks struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(cluster string, addrs []string) // protected by mu
}

// tell calls every hook with the addresses of cluster's hosts gone,
// unless there are none.
func (g *goneHooks) tell(cluster string, addrs []string) {
	if len(addrs) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, fn := range g.fns {
		fn(cluster, addrs)
	}
}

// OnHostsGone makes fn hear of the hosts that leave a cluster, by
// address (ip:port): removed by an update of its endpoints (EDS, a
// STRICT_DNS answer; not LOGICAL_DNS's one host, which takes each new
// address in place, nor an ORIGINAL_DST cluster's, which its cleanup
// removes) or replaced by a new host at its address (moved to another
// locality), or every host of a cluster the update removed or replaced
// (CDS), once the cluster's picks no longer return them. The cluster's
// own pools drain them as Envoy's do; fn is for the pools kept
// elsewhere (the event loops'). It is called on the goroutine of the
// update (the xDS client's, a cluster's DNS resolver's) and must not
// block; stop unregisters it.
func (m *Manager) OnHostsGone(fn func(cluster string, addrs []string)) (stop func()) {
	g := m.gone
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.next
	g.next++
	g.fns[id] = fn
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.fns, id)
	}
}

// addrs are the addresses of hosts.
func addrs(hosts []*Host) []string {
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = h.Addr
	}
	return out
}

// NewManager returns a manager whose clusters run until ctx ends or Close.
func NewManager(ctx context.Context, st *stats.Store, log *slog.Logger) *Manager {
	m := &Manager{log: log, stats: st, ctx: ctx, endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		withdrawn: map[string]bool{}, warming: map[string]*Cluster{}, gone: &goneHooks{fns: map[int]func(string, []string){}}}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
	st.Scope("cluster_manager.", "envoy_cluster_manager_").GaugeFunc("active_clusters",
		func() int64 { return int64(len(*m.clusters.Load())) })
	return m
}

// SetTLS sets where upstream TLS contexts find their certificates. Call
// before the first Apply.
func (m *Manager) SetTLS(ts *tlsctx.Store) { m.tls = ts }

// Get returns the named cluster or nil.
func (m *Manager) Get(name string) *Cluster { return (*m.clusters.Load())[name] }

// All returns the current clusters (shared; do not modify).
func (m *Manager) All() map[string]*Cluster { return *m.clusters.Load() }

// Apply makes pbs the complete set of clusters (a CDS state of the world).
// Unchanged clusters keep running; new and changed ones are built first
// and only swapped in when all of them built. It returns the names of the
// EDS clusters, whose endpoints the caller subscribes to.
func (m *Manager) Apply(pbs []*clusterv3.Cluster) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.clusters.Load()
	next := make(map[string]*Cluster, len(pbs))
	var fresh []*Cluster
	var errs []error
	warming := map[string]*Cluster{}
	for _, pb := range pbs {
		if _, dup := next[pb.GetName()]; dup {
			errs = append(errs, fmt.Errorf("cluster %s: duplicate name", pb.GetName()))
			continue
		}
		if c, ok := old[pb.GetName()]; ok && proto.Equal(c.PB, pb) {
			next[pb.GetName()] = c
			continue
		}
		c, err := Build(pb, m.stats, m.log, m.tls)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fresh = append(fresh, c)
		if prev, ok := old[pb.GetName()]; ok && c.TLS != nil && !c.TLS.Ready() {
			// The version in force serves until this one's secrets arrive.
			warming[pb.GetName()] = c
			next[pb.GetName()] = prev
			continue
		}
		next[pb.GetName()] = c
	}
	if len(errs) > 0 {
		for _, c := range fresh {
			c.halt()
		}
		return nil, errors.Join(errs...)
	}
	for name, c := range m.warming {
		c.halt() // replaced by this update, or warming again below
		delete(m.warming, name)
	}
	for name, c := range warming {
		m.warming[name] = c
	}
	for _, c := range fresh {
		c.gone = m.gone
		if la, ok := m.endpoints[c.Name]; ok && c.Type == EDS {
			// A rebuilt cluster keeps the endpoints it had (App Mesh lost
			// them for half an hour when it did not: roadmap #192).
			_ = c.setEndpoints(la) // validated when accepted
		}
		c.start(m.ctx, m.stats)
	}
	m.clusters.Store(&next)
	var eds []string
	for name, c := range next {
		if c.Type == EDS {
			eds = append(eds, name)
		}
	}
	for name, c := range old {
		if next[name] != c {
			c.halt()
			m.gone.tell(name, addrs(c.Hosts()))
		}
		if _, ok := next[name]; !ok {
			delete(m.endpoints, name)
			delete(m.withdrawn, name)
		}
	}
	return eds, nil
}

// Warm swaps in the warming clusters whose secrets have arrived, or all
// of them when force is set (the initial fetch timeout passed: they then
// fail their handshakes until the secrets come, never plaintext). It
// reports whether clusters are still warming.
func (m *Manager) Warm(force bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.warming) == 0 {
		return false
	}
	cur := *m.clusters.Load()
	next := make(map[string]*Cluster, len(cur))
	for n, c := range cur {
		next[n] = c
	}
	var replaced []*Cluster
	for name, c := range m.warming {
		if !force && !c.TLS.Ready() {
			continue
		}
		if prev, ok := next[name]; ok {
			replaced = append(replaced, prev)
		}
		next[name] = c
		delete(m.warming, name)
	}
	m.clusters.Store(&next)
	for _, c := range replaced {
		c.halt()
		m.gone.tell(c.Name, addrs(c.Hosts()))
	}
	return len(m.warming) > 0
}

// Warming returns the clusters waiting for their secrets.
func (m *Manager) Warming() []*Cluster {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Cluster, 0, len(m.warming))
	for _, c := range m.warming {
		out = append(out, c)
	}
	return out
}

// SetEndpoints applies the complete set of EDS assignments after a
// response (a subset of clusters may be named). All are validated before
// any is applied. An assignment that is the very message last accepted
// for its cluster was not in the response (the xDS client hands over
// what it did not resend as it was) and is no update of that cluster, as
// Envoy hands a response's assignments to their clusters only. A cluster
// whose assignment left the set keeps its hosts and counts update_empty
// once, as Envoy's EDS cluster does for an update without its assignment.
func (m *Manager) SetEndpoints(las []*endpointv3.ClusterLoadAssignment) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, la := range las {
		if err := CheckEndpoints(la); err != nil {
			return err
		}
	}
	cur := *m.clusters.Load()
	in := make(map[string]bool, len(las))
	for _, la := range las {
		name := la.GetClusterName()
		in[name] = true
		delete(m.withdrawn, name)
		if m.endpoints[name] == la {
			continue
		}
		m.endpoints[name] = la
		if c, ok := cur[name]; ok && c.Type == EDS {
			_ = c.setEndpoints(la) // validated above
		}
		if c, ok := m.warming[name]; ok && c.Type == EDS {
			_ = c.setEndpoints(la)
		}
	}
	for name := range m.endpoints {
		if in[name] || m.withdrawn[name] {
			continue
		}
		m.withdrawn[name] = true
		if c, ok := cur[name]; ok && c.Type == EDS {
			// Envoy's EDS counts an update without the assignment as
			// empty, keeps the hosts, and its subscription counts the
			// update a success.
			c.Stats.updateEmpty.Inc()
			c.Stats.updateSuccess.Inc()
		}
	}
	return nil
}

// Endpoints returns the accepted assignments, for config_dump.
func (m *Manager) Endpoints() []*endpointv3.ClusterLoadAssignment {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*endpointv3.ClusterLoadAssignment, 0, len(m.endpoints))
	for _, la := range m.endpoints {
		out = append(out, la)
	}
	return out
}

// Close stops every cluster's background work and waits for it.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range *m.clusters.Load() {
		c.halt()
	}
	for name, c := range m.warming {
		c.halt()
		delete(m.warming, name)
	}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
}
