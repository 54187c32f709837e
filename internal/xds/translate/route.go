package translate

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// flavor is the kind of xDS client a resource is for.
type flavor int

const (
	envoyFlavor flavor = iota // Envoy or weft proxy
	grpcFlavor                // a proxyless gRPC client (xds resolver)
)

// egressRouteConfig is the route table of one destination port: one
// virtual host per virtual service answering on it, plus extra hosts
// (ALLOW_ALL passthrough, gateway default backend) after them.
func (b *build) egressRouteConfig(name string, sps []svcPort, domainPort uint32, fl flavor, extra ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name, VirtualHosts: make([]*routev3.VirtualHost, 0, len(sps)+len(extra))}
	for _, sp := range sps {
		rc.VirtualHosts = append(rc.VirtualHosts, b.egressVirtualHost(sp, domainPort, fl))
	}
	rc.VirtualHosts = append(rc.VirtualHosts, extra...)
	return rc
}

// egressVirtualHost is a virtual service's host in a route table,
// shared through the Memo by every caller of the service (see
// Memo.virtualHost).
func (b *build) egressVirtualHost(sp svcPort, domainPort uint32, fl flavor) *routev3.VirtualHost {
	if b.memo != nil {
		return b.memo.virtualHost(b, sp, domainPort, fl)
	}
	return b.newEgressVirtualHost(sp, domainPort, fl)
}

func (b *build) newEgressVirtualHost(sp svcPort, domainPort uint32, fl flavor) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    sp.service,
		Domains: []string{sp.service, sp.service + ":" + port(domainPort)},
		Routes:  b.egressRoutes(sp, fl),
	}
}

func (b *build) egressRoutes(sp svcPort, fl flavor) []*routev3.Route {
	var out []*routev3.Route
	for _, r := range sp.routes {
		if er := b.egressRoute(sp.service, r, fl); er != nil {
			out = append(out, er)
		}
	}
	return out
}

// egressRoute converts one App Mesh route; nil when no target has weight,
// which Envoy and gRPC both refuse, or when a gRPC client cannot match it.
func (b *build) egressRoute(service string, r meshRoute, fl flavor) *routev3.Route {
	m := routeMatch(r)
	if fl == grpcFlavor {
		if !grpcMethod(m) {
			return nil
		}
		legacyHeaderMatchers(m.Headers)
	}
	wc := b.weightedClusters(service, r.targets, fl)
	if wc == nil {
		return nil
	}
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}
	perRequest, idle := routeTimeouts(r)
	if fl == grpcFlavor {
		// gRPC ignores RouteAction.timeout; max_stream_duration is its deadline.
		if perRequest > 0 {
			ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: ms(perRequest)}
		}
	} else {
		ra.Timeout = ms(perRequest)
		if idle >= 0 {
			ra.IdleTimeout = ms(idle)
		}
	}
	ra.RetryPolicy = b.retryPolicy(r, fl)
	return &routev3.Route{Name: r.name, Match: m, Action: &routev3.Route_Route{Route: ra}}
}

// grpcMethod settles a :method condition for a gRPC client, whose calls
// are all POST (gRPC clients do not see :method as a header): POST always
// matches and is dropped; any other method never matches, so the route is
// left out (false).
func grpcMethod(m *routev3.RouteMatch) bool {
	kept := m.Headers[:0]
	for _, h := range m.Headers {
		if h.GetName() != ":method" {
			kept = append(kept, h)
			continue
		}
		if (h.GetStringMatch().GetExact() == "POST") == h.GetInvertMatch() {
			return false
		}
	}
	m.Headers = kept
	return true
}

// grpcKeeps reports whether a gRPC client's table keeps route r
// (grpcMethod: its :method match admits POST).
func grpcKeeps(r meshRoute) bool {
	return grpcMethod(routeMatch(r))
}

func routeMatch(r meshRoute) *routev3.RouteMatch {
	switch {
	case r.http != nil:
		return httpMatch(r.http.Match)
	case r.grpc != nil:
		return grpcMatch(r.grpc.Match)
	}
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
}

// weightedClusters keeps zero weights, as App Mesh did (a canary at 0 shows
// in the config); total_weight is the sum, which C-core gRPC requires.
func (b *build) weightedClusters(service string, ts []target, fl flavor) *routev3.WeightedCluster {
	wc := &routev3.WeightedCluster{}
	var total uint32
	for _, t := range ts {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name: b.egressCluster(service, t, fl), Weight: u32(t.weight)})
		total += t.weight
	}
	if total == 0 {
		return nil
	}
	wc.TotalWeight = u32(total) //nolint:staticcheck // deprecated in Envoy, still needed by C-core gRPC
	return wc
}

// routeTimeouts gives the per-request timeout (0: none) and the idle
// timeout (-1: unset) in milliseconds. A node provider's implicit route
// always has 15 s, as in App Mesh (roadmap #443).
func routeTimeouts(r meshRoute) (perRequest, idle int64) {
	perRequest, idle = defaultRouteTimeoutMs, -1
	var pr, id *appmesh.Duration
	switch {
	case r.http != nil && r.http.Timeout != nil:
		pr, id = r.http.Timeout.PerRequest, r.http.Timeout.Idle
	case r.grpc != nil && r.grpc.Timeout != nil:
		pr, id = r.grpc.Timeout.PerRequest, r.grpc.Timeout.Idle
	}
	if v, ok := millis(pr); ok {
		perRequest = v
	}
	if v, ok := millis(id); ok {
		idle = v
	}
	return perRequest, idle
}

// Retry conditions by App Mesh event (reference §2.5; API HttpRetryPolicy).
var (
	serverErrorCodes  = []uint32{500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}
	gatewayErrorCodes = []uint32{502, 503, 504}
	clientErrorCodes  = []uint32{409}
	// grpcRetryOn is what gRPC clients understand in retry_on.
	grpcRetryOn = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)

// retryPolicy maps the route's policy, or App Mesh's invisible default
// (2 retries on gRPC UNAVAILABLE, HTTP 503, connect failure, refused stream,
// reset) when it has none.
func (b *build) retryPolicy(r meshRoute, fl flavor) *routev3.RetryPolicy {
	events, codes, max, perTry := retryEvents(r)
	if fl == grpcFlavor {
		return grpcRetryPolicy(events, max)
	}
	if max == 0 || len(events) == 0 && len(codes) == 0 {
		return nil
	}
	if len(codes) > 0 {
		events = append(events, "retriable-status-codes")
	}
	rp := &routev3.RetryPolicy{
		RetryOn:              strings.Join(events, ","),
		NumRetries:           u32(max),
		RetriableStatusCodes: codes,
		// App Mesh always tries another host on retry.
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{b.previousHosts()},
		HostSelectionRetryMaxAttempts: 5,
	}
	if perTry > 0 {
		rp.PerTryTimeout = ms(perTry)
	}
	return rp
}

func (b *build) previousHosts() *routev3.RetryPolicy_RetryHostPredicate {
	return &routev3.RetryPolicy_RetryHostPredicate{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: b.any(&previoushostsv3.PreviousHostsPredicate{})},
	}
}

// grpcRetryPolicy keeps the conditions gRPC implements; gRPC refuses
// num_retries 0, so no policy is sent then.
func grpcRetryPolicy(events []string, max uint32) *routev3.RetryPolicy {
	var on []string
	for _, e := range events {
		if slices.Contains(grpcRetryOn, e) {
			on = append(on, e)
		}
	}
	if max == 0 || len(on) == 0 {
		return nil
	}
	return &routev3.RetryPolicy{RetryOn: strings.Join(on, ","), NumRetries: u32(max)}
}

// retryEvents collects Envoy retry_on conditions (sorted, without
// retriable-status-codes), status codes (sorted), retries and per-try
// timeout in milliseconds (0: unset).
func retryEvents(r meshRoute) (events []string, codes []uint32, max uint32, perTry int64) {
	var httpEvents []string
	var tcpEvents []appmesh.TcpRetryPolicyEvent
	var grpcEvents []appmesh.GrpcRetryPolicyEvent
	var maxRetries *int64
	var per *appmesh.Duration
	switch {
	case r.http != nil && r.http.RetryPolicy != nil:
		p := r.http.RetryPolicy
		httpEvents, tcpEvents, maxRetries, per = p.HttpRetryEvents, p.TcpRetryEvents, p.MaxRetries, p.PerRetryTimeout
	case r.grpc != nil && r.grpc.RetryPolicy != nil:
		p := r.grpc.RetryPolicy
		httpEvents, tcpEvents, grpcEvents, maxRetries, per = p.HttpRetryEvents, p.TcpRetryEvents, p.GrpcRetryEvents, p.MaxRetries, p.PerRetryTimeout
	case r.tcp != nil:
		return nil, nil, 0, 0
	default:
		return []string{"connect-failure", "refused-stream", "reset", "unavailable"}, []uint32{503}, defaultRetries, 0
	}
	set := map[string]bool{}
	codeSet := map[uint32]bool{}
	for _, e := range httpEvents {
		addHTTPEvent(e, set, codeSet)
	}
	for _, e := range tcpEvents {
		if e == appmesh.TcpRetryPolicyEventConnectionError {
			set["connect-failure"] = true
		}
	}
	for _, e := range grpcEvents {
		set[string(e)] = true
	}
	m, _ := i64(maxRetries)
	perTry, _ = millis(per)
	return sortedKeys(set), sortedCodes(codeSet), clampU32(m), perTry
}

func addHTTPEvent(e string, set map[string]bool, codes map[uint32]bool) {
	add := func(cs []uint32) {
		for _, c := range cs {
			codes[c] = true
		}
	}
	switch e {
	case "server-error":
		set["reset"] = true
		add(serverErrorCodes)
	case "gateway-error":
		set["reset"] = true
		add(gatewayErrorCodes)
	case "client-error":
		add(clientErrorCodes)
	case "stream-error":
		set["refused-stream"] = true
	}
}

func sortedCodes(m map[uint32]bool) []uint32 {
	var out []uint32
	for c := range m {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// adsSource is how every RDS and EDS reference is made: over the ADS
// stream, as App Mesh's resources did.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}
