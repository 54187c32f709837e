package translate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Check validates one proxy's resources the way their consumers will:
//   - deep validation: ValidateAll (protoc-gen-validate rules) on every
//     resource and on every message packed in an Any, recursively;
//   - rules Envoy or gRPC enforce at runtime: the router filter is present
//     and last, weighted clusters weigh more than 0 and total_weight is
//     their sum, listeners have an address or an api_listener, filter
//     chain matches and names do not repeat, virtual host names and
//     domains are unique within a route table;
//   - for a proxyless gRPC client (ForGRPC): only cluster types, sources
//     and retry policies gRPC accepts;
//   - between resources: names are unique and sorted, sockets do not
//     overlap, every RDS name, cluster and EDS cluster resolves, and every
//     ClusterLoadAssignment belongs to an EDS cluster.
//
// It is CheckResource on every resource, then CheckRefs on what they
// name. It returns every violation found, joined. Tests call it on every
// golden; the xDS server calls the two parts itself, so that it runs
// CheckResource, the costly one, once per distinct resource.
func Check(r *Resources) error {
	resource, refs := checkParts(r)
	return errors.Join(resource, refs)
}

// checkParts runs Check's two parts, as the xDS server does, and returns
// what each found.
func checkParts(r *Resources) (resource, refs error) {
	grpc := ForGRPC(r)
	var s Summary
	var errs []error
	each := func(list *[]*Facts, m proto.Message) {
		f, err := CheckResource(m, grpc)
		*list = append(*list, &f)
		errs = append(errs, err)
	}
	for _, m := range r.Listeners {
		each(&s.Listeners, m)
	}
	for _, m := range r.Routes {
		each(&s.Routes, m)
	}
	for _, m := range r.Clusters {
		each(&s.Clusters, m)
	}
	for _, m := range r.Endpoints {
		each(&s.Endpoints, m)
	}
	return errors.Join(errs...), CheckRefs(s)
}

// ForGRPC reports whether r is the configuration of a proxyless gRPC
// client: its listeners are api_listeners. CheckResource applies gRPC's
// limits then.
func ForGRPC(r *Resources) bool {
	return len(r.Listeners) > 0 && r.Listeners[0].GetApiListener() != nil
}

// Facts is what CheckResource learns of one resource that CheckRefs
// needs: its name, the port it binds and what it names. Like
// CheckResource's error, it depends only on the resource's content and
// the grpc flag, so a caller may keep it with the resource and share it;
// it is never modified after CheckResource returns.
type Facts struct {
	// Name is the resource's name (a ClusterLoadAssignment's cluster_name).
	Name string
	// Port is the socket port a listener binds; 0 for none.
	Port uint32
	// Routes are the route configurations a listener reads over RDS.
	Routes []string
	// Clusters are the clusters a listener or route configuration names,
	// sorted, without duplicates.
	Clusters []string
	// EDS is, for a cluster of type EDS, the ClusterLoadAssignment it
	// reads; "" for any other resource.
	EDS string
}

// Summary is one proxy's resources as CheckRefs sees them: the Facts of
// each, in the order of Resources.
type Summary struct {
	Listeners, Routes, Clusters, Endpoints []*Facts
}

// CheckResource validates one resource on its own: deep validation and
// every rule that needs no other resource (see Check); grpc says that it
// is for a proxyless gRPC client (ForGRPC of its proxy's resources). m is
// a *Listener, *RouteConfiguration, *Cluster or *ClusterLoadAssignment
// and is only read. The result is a pure function of m's content and
// grpc. Facts are returned even with an error.
func CheckResource(m proto.Message, grpc bool) (Facts, error) {
	c := &checker{grpc: grpc}
	switch r := m.(type) {
	case *listenerv3.Listener:
		c.f.Name = r.GetName()
		c.deep("listener "+r.GetName(), r)
		c.listener(r)
	case *routev3.RouteConfiguration:
		c.f.Name = r.GetName()
		c.deep("route config "+r.GetName(), r)
		c.routeConfig(r)
	case *clusterv3.Cluster:
		c.f.Name = r.GetName()
		c.deep("cluster "+r.GetName(), r)
		c.cluster(r)
	case *endpointv3.ClusterLoadAssignment:
		c.f.Name = r.GetClusterName()
		c.deep("endpoints "+r.GetClusterName(), r)
		c.endpoints(r)
	default:
		c.fail("unexpected resource type %T", m)
	}
	slices.Sort(c.f.Clusters)
	c.f.Clusters = slices.Compact(c.f.Clusters)
	return c.f, errors.Join(c.errs...)
}

// CheckRefs applies the rules between one proxy's resources (see Check)
// to their Facts.
func CheckRefs(s Summary) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	byName := func(kind string, fs []*Facts) map[string]*Facts {
		m := make(map[string]*Facts, len(fs))
		for i, f := range fs {
			if f.Name == "" {
				fail("%s without a name", kind)
			}
			if i > 0 && fs[i-1].Name >= f.Name {
				fail("%s %q: not sorted or duplicated", kind, f.Name)
			}
			m[f.Name] = f
		}
		return m
	}
	byName("listener", s.Listeners)
	routes := byName("route config", s.Routes)
	clusters := byName("cluster", s.Clusters)
	cla := byName("endpoints", s.Endpoints)
	clusterRefs := func(from string, f *Facts) {
		for _, cl := range f.Clusters {
			if clusters[cl] == nil {
				fail("%s %s: cluster %q does not exist", from, f.Name, cl)
			}
		}
	}
	// Envoy refuses a second listener on a bound port (0.0.0.0 and ::
	// overlap, so the address is not compared).
	bound := map[uint32]string{}
	for _, l := range s.Listeners {
		if l.Port != 0 {
			if o, dup := bound[l.Port]; dup {
				fail("listeners %s and %s bind port %d", o, l.Name, l.Port)
			}
			bound[l.Port] = l.Name
		}
		for _, rc := range l.Routes {
			if routes[rc] == nil {
				fail("listener %s: route config %q does not exist", l.Name, rc)
			}
		}
		clusterRefs("listener", l)
	}
	for _, rc := range s.Routes {
		clusterRefs("route config", rc)
	}
	for _, cl := range s.Clusters {
		if cl.EDS != "" && cla[cl.EDS] == nil {
			fail("cluster %s: no ClusterLoadAssignment", cl.Name)
		}
	}
	for _, e := range s.Endpoints {
		if cl := clusters[e.Name]; cl == nil || cl.EDS == "" {
			fail("endpoints %s: no EDS cluster of that name", e.Name)
		}
	}
	return errors.Join(errs...)
}

// checker collects what CheckResource finds in one resource.
type checker struct {
	grpc bool // the resource is for a proxyless gRPC client
	f    Facts
	errs []error
}

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// deep runs ValidateAll on m and, recursively, on everything packed in its
// Any fields. The packed types must be linked into the binary: this
// package imports every extension it emits.
func (c *checker) deep(what string, m proto.Message) {
	if err := DeepValidate(m); err != nil {
		c.fail("%s: %w", what, err)
	}
}

// DeepValidate checks m as Envoy would before accepting it: the
// protoc-gen-validate rules of every message, including every message
// packed in an Any (ValidateAll alone does not look inside those). The
// packed types must be linked into the binary.
func DeepValidate(m proto.Message) error {
	var errs []error
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, err)
		}
	}
	walkAnys(m.ProtoReflect(), func(a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err))
			return
		}
		if err := DeepValidate(inner); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.GetTypeUrl(), err))
		}
	})
	return errors.Join(errs...)
}

// walkAnys calls fn on every Any reachable from m without crossing another
// Any (DeepValidate recurses into those).
func walkAnys(m protoreflect.Message, fn func(*anypb.Any)) {
	visit := func(v protoreflect.Message) {
		if a, ok := v.Interface().(*anypb.Any); ok {
			fn(a)
			return
		}
		walkAnys(v, fn)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { visit(mv.Message()); return true })
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					visit(v.List().Get(i).Message())
				}
			}
		case fd.Message() != nil:
			visit(v.Message())
		}
		return true
	})
}

func (c *checker) listener(l *listenerv3.Listener) {
	name := l.GetName()
	switch {
	case l.GetApiListener() != nil:
		if !c.grpc {
			c.fail("listener %s: api_listener among socket listeners", name)
		}
		c.networkFilter(name, &listenerv3.Filter{Name: hcmFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: l.GetApiListener().GetApiListener()}})
		return
	case l.GetAddress() == nil:
		c.fail("listener %s: no address and no api_listener", name)
	case c.grpc:
		c.fail("listener %s: socket listener for a proxyless gRPC client", name)
	}
	c.f.Port = l.GetAddress().GetSocketAddress().GetPortValue()
	if len(l.GetFilterChains()) == 0 && l.GetDefaultFilterChain() == nil {
		c.fail("listener %s: no filter chain", name)
	}
	var matches []*listenerv3.FilterChainMatch
	names := map[string]bool{}
	for _, fc := range append(slices.Clone(l.GetFilterChains()), l.GetDefaultFilterChain()) {
		if fc == nil {
			continue
		}
		if n := fc.GetName(); n != "" {
			if names[n] {
				c.fail("listener %s: filter chain name %q repeated", name, n)
			}
			names[n] = true
		}
		if fc != l.GetDefaultFilterChain() {
			m := fc.GetFilterChainMatch()
			if m == nil {
				m = &listenerv3.FilterChainMatch{}
			}
			if slices.ContainsFunc(matches, func(o *listenerv3.FilterChainMatch) bool { return proto.Equal(o, m) }) {
				c.fail("listener %s: filter chain %q repeats a match", name, fc.GetName())
			}
			matches = append(matches, m)
		}
		if len(fc.GetFilters()) == 0 {
			c.fail("listener %s: filter chain %q has no filter", name, fc.GetName())
		}
		for _, f := range fc.GetFilters() {
			c.networkFilter(name, f)
		}
	}
}

func (c *checker) networkFilter(listener string, f *listenerv3.Filter) {
	m, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		c.fail("listener %s: filter %s: %w", listener, f.GetName(), err)
		return
	}
	switch cfg := m.(type) {
	case *hcmv3.HttpConnectionManager:
		c.hcm(listener, cfg)
	case *tcpproxyv3.TcpProxy:
		c.tcpProxy(listener, cfg)
	default:
		c.fail("listener %s: unexpected filter %s", listener, f.GetTypedConfig().GetTypeUrl())
	}
}

func (c *checker) hcm(listener string, m *hcmv3.HttpConnectionManager) {
	fs := m.GetHttpFilters()
	switch {
	case len(fs) == 0:
		c.fail("listener %s: connection manager without http filters", listener)
	case fs[len(fs)-1].GetName() != routerFilterName:
		c.fail("listener %s: router filter missing or not last", listener)
	}
	for _, f := range fs[:max(len(fs)-1, 0)] {
		if f.GetName() == routerFilterName {
			c.fail("listener %s: router filter before the last", listener)
		}
	}
	switch {
	case m.GetRds() != nil:
		if m.GetRds().GetConfigSource().GetAds() == nil {
			c.fail("listener %s: RDS %s not over ADS", listener, m.GetRds().GetRouteConfigName())
		}
		c.f.Routes = append(c.f.Routes, m.GetRds().GetRouteConfigName())
	case m.GetRouteConfig() != nil:
		c.routeConfig(m.GetRouteConfig())
	default:
		c.fail("listener %s: connection manager without routes", listener)
	}
}

func (c *checker) tcpProxy(listener string, tp *tcpproxyv3.TcpProxy) {
	if cl := tp.GetCluster(); cl != "" {
		c.clusterRef(cl)
		return
	}
	wc := tp.GetWeightedClusters()
	if wc == nil {
		c.fail("listener %s: tcp_proxy without a cluster", listener)
		return
	}
	for _, w := range wc.GetClusters() {
		c.clusterRef(w.GetName())
	}
}

// clusterRef records a cluster the resource names; CheckRefs resolves it.
func (c *checker) clusterRef(name string) {
	c.f.Clusters = append(c.f.Clusters, name)
}

func (c *checker) routeConfig(rc *routev3.RouteConfiguration) {
	domains := map[string]string{}
	hosts := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		if hosts[vh.GetName()] {
			c.fail("route config %s: virtual host %q repeated", rc.GetName(), vh.GetName())
		}
		hosts[vh.GetName()] = true
		for _, d := range vh.GetDomains() {
			if o, dup := domains[strings.ToLower(d)]; dup {
				c.fail("route config %s: domain %q in virtual hosts %q and %q", rc.GetName(), d, o, vh.GetName())
			}
			domains[strings.ToLower(d)] = vh.GetName()
		}
		for _, r := range vh.GetRoutes() {
			c.route(rc.GetName()+"/"+vh.GetName()+"/"+r.GetName(), r)
		}
	}
}

func (c *checker) route(where string, r *routev3.Route) {
	ra := r.GetRoute()
	if ra == nil {
		c.fail("route %s: no route action", where)
		return
	}
	if cl := ra.GetCluster(); cl != "" {
		c.clusterRef(cl)
	} else if wc := ra.GetWeightedClusters(); wc != nil {
		c.weighted(where, wc)
	} else {
		c.fail("route %s: no cluster", where)
	}
	if c.grpc {
		c.grpcRoute(where, ra)
	}
}

func (c *checker) weighted(where string, wc *routev3.WeightedCluster) {
	var sum uint32
	for _, w := range wc.GetClusters() {
		c.clusterRef(w.GetName())
		sum += w.GetWeight().GetValue()
	}
	if sum == 0 {
		c.fail("route %s: weighted clusters weigh 0", where)
	}
	if tw := wc.GetTotalWeight(); tw != nil && tw.GetValue() != sum { //nolint:staticcheck // checking what C-core reads
		c.fail("route %s: total_weight %d, weights sum to %d", where, tw.GetValue(), sum) //nolint:staticcheck
	}
}

// grpcRoute applies the limits gRPC puts on routes: retries at least one,
// and only gRPC status conditions.
func (c *checker) grpcRoute(where string, ra *routev3.RouteAction) {
	rp := ra.GetRetryPolicy()
	if rp == nil {
		return
	}
	if rp.GetNumRetries() != nil && rp.GetNumRetries().GetValue() < 1 {
		c.fail("route %s: gRPC refuses num_retries 0", where)
	}
	for _, on := range strings.Split(rp.GetRetryOn(), ",") {
		if !slices.Contains(grpcRetryOn, on) {
			c.fail("route %s: gRPC does not retry on %q", where, on)
		}
	}
}

func (c *checker) cluster(cl *clusterv3.Cluster) {
	name := cl.GetName()
	switch t := cl.GetType(); t {
	case clusterv3.Cluster_EDS:
		if cl.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			c.fail("cluster %s: EDS not over ADS", name)
		}
		c.f.EDS = cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), name)
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		eps := cl.GetLoadAssignment().GetEndpoints()
		if len(eps) == 0 || len(eps[0].GetLbEndpoints()) == 0 {
			c.fail("cluster %s: %s without endpoints", name, t)
		}
		if t == clusterv3.Cluster_LOGICAL_DNS && (len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1) {
			c.fail("cluster %s: LOGICAL_DNS needs exactly one endpoint", name)
		}
	}
	if !c.grpc {
		return
	}
	if t := cl.GetType(); t != clusterv3.Cluster_EDS && t != clusterv3.Cluster_LOGICAL_DNS {
		c.fail("cluster %s: gRPC refuses cluster type %s", name, t)
	}
	if p := cl.GetLbPolicy(); p != clusterv3.Cluster_ROUND_ROBIN && p != clusterv3.Cluster_LEAST_REQUEST && p != clusterv3.Cluster_RING_HASH {
		c.fail("cluster %s: gRPC refuses lb_policy %s", name, p)
	}
}

func (c *checker) endpoints(e *endpointv3.ClusterLoadAssignment) {
	for _, loc := range e.GetEndpoints() {
		if loc.GetLocality() == nil || loc.GetLoadBalancingWeight().GetValue() == 0 {
			c.fail("endpoints %s: gRPC ignores a locality without an ID or weight", e.GetClusterName())
		}
	}
}
