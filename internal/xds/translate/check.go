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
//   - references: every RDS name, cluster and EDS cluster resolves, and
//     every ClusterLoadAssignment belongs to an EDS cluster;
//   - rules Envoy or gRPC enforce at runtime: the router filter is present
//     and last, weighted clusters weigh more than 0 and total_weight is
//     their sum, names are unique and sorted, listeners have an address or
//     an api_listener, sockets, filter chain matches and names do not
//     repeat, virtual host names and domains are unique within a route
//     table;
//   - for a proxyless gRPC client (its listeners are api_listeners): only
//     cluster types, sources and retry policies gRPC accepts.
//
// It returns every violation found, joined. The xDS server calls it on
// every snapshot; tests call it on every golden.
func Check(r *Resources) error {
	c := &checker{
		routes:   map[string]*routev3.RouteConfiguration{},
		clusters: map[string]*clusterv3.Cluster{},
		cla:      map[string]bool{},
	}
	c.names(r)
	for _, rc := range r.Routes {
		c.routes[rc.GetName()] = rc
	}
	for _, cl := range r.Clusters {
		c.clusters[cl.GetName()] = cl
	}
	for _, e := range r.Endpoints {
		c.cla[e.GetClusterName()] = true
	}
	c.grpc = len(r.Listeners) > 0 && r.Listeners[0].GetApiListener() != nil
	c.sockets(r.Listeners)
	for _, l := range r.Listeners {
		c.deep("listener "+l.GetName(), l)
		c.listener(l)
	}
	for _, rc := range r.Routes {
		c.deep("route config "+rc.GetName(), rc)
		c.routeConfig(rc)
	}
	for _, cl := range r.Clusters {
		c.deep("cluster "+cl.GetName(), cl)
		c.cluster(cl)
	}
	for _, e := range r.Endpoints {
		c.deep("endpoints "+e.GetClusterName(), e)
		c.endpoints(e)
	}
	return errors.Join(c.errs...)
}

type checker struct {
	routes   map[string]*routev3.RouteConfiguration
	clusters map[string]*clusterv3.Cluster
	cla      map[string]bool
	grpc     bool // the resources are for a proxyless gRPC client
	errs     []error
}

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// names checks that each kind is sorted by name without duplicates.
func (c *checker) names(r *Resources) {
	sorted := func(kind string, names []string) {
		for i, n := range names {
			if n == "" {
				c.fail("%s without a name", kind)
			}
			if i > 0 && names[i-1] >= n {
				c.fail("%s %q: not sorted or duplicated", kind, n)
			}
		}
	}
	sorted("listener", mapNames(r.Listeners, (*listenerv3.Listener).GetName))
	sorted("route config", mapNames(r.Routes, (*routev3.RouteConfiguration).GetName))
	sorted("cluster", mapNames(r.Clusters, (*clusterv3.Cluster).GetName))
	sorted("endpoints", mapNames(r.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName))
}

func mapNames[T any](in []T, name func(T) string) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = name(v)
	}
	return out
}

// deep runs ValidateAll on m and, recursively, on everything packed in its
// Any fields. The packed types must be linked into the binary: this
// package imports every extension it emits.
func (c *checker) deep(what string, m proto.Message) {
	if err := deepValidate(m); err != nil {
		c.fail("%s: %w", what, err)
	}
}

func deepValidate(m proto.Message) error {
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
		if err := deepValidate(inner); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.GetTypeUrl(), err))
		}
	})
	return errors.Join(errs...)
}

// walkAnys calls fn on every Any reachable from m without crossing another
// Any (deepValidate recurses into those).
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

// sockets reports listeners that bind the same port; Envoy refuses the
// second (0.0.0.0 and :: overlap, so the address is not compared).
func (c *checker) sockets(ls []*listenerv3.Listener) {
	bound := map[uint32]string{}
	for _, l := range ls {
		sa := l.GetAddress().GetSocketAddress()
		if sa == nil {
			continue
		}
		if o, dup := bound[sa.GetPortValue()]; dup {
			c.fail("listeners %s and %s bind port %d", o, l.GetName(), sa.GetPortValue())
		}
		bound[sa.GetPortValue()] = l.GetName()
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
		if c.routes[m.GetRds().GetRouteConfigName()] == nil {
			c.fail("listener %s: route config %q does not exist", listener, m.GetRds().GetRouteConfigName())
		}
	case m.GetRouteConfig() != nil:
		c.routeConfig(m.GetRouteConfig())
	default:
		c.fail("listener %s: connection manager without routes", listener)
	}
}

func (c *checker) tcpProxy(listener string, tp *tcpproxyv3.TcpProxy) {
	if cl := tp.GetCluster(); cl != "" {
		c.clusterRef("listener "+listener, cl)
		return
	}
	wc := tp.GetWeightedClusters()
	if wc == nil {
		c.fail("listener %s: tcp_proxy without a cluster", listener)
		return
	}
	for _, w := range wc.GetClusters() {
		c.clusterRef("listener "+listener, w.GetName())
	}
}

func (c *checker) clusterRef(from, name string) {
	if c.clusters[name] == nil {
		c.fail("%s: cluster %q does not exist", from, name)
	}
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
		c.clusterRef("route "+where, cl)
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
		c.clusterRef("route "+where, w.GetName())
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
		if !c.cla[cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), name)] {
			c.fail("cluster %s: no ClusterLoadAssignment", name)
		}
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
	cl := c.clusters[e.GetClusterName()]
	if cl == nil || cl.GetType() != clusterv3.Cluster_EDS {
		c.fail("endpoints %s: no EDS cluster of that name", e.GetClusterName())
	}
	for _, loc := range e.GetEndpoints() {
		if loc.GetLocality() == nil || loc.GetLoadBalancingWeight().GetValue() == 0 {
			c.fail("endpoints %s: gRPC ignores a locality without an ID or weight", e.GetClusterName())
		}
	}
}
