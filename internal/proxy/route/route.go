// Package route compiles an Envoy RouteConfiguration into the immutable
// tables weft proxy matches requests against: virtual hosts by Host, then
// the first route whose path, header and query matchers all match.
//
// It does no I/O. Everything that can fail (regexes, unknown retry
// conditions, fields weft does not implement) fails in Compile, so that the
// update is NACKed and requests never see a half-built table.
package route

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// DefaultTimeout is Envoy's route timeout when RouteAction.timeout is unset.
const DefaultTimeout = 15 * time.Second

// Config is one compiled RouteConfiguration. Immutable.
type Config struct {
	Name    string
	exact   map[string]*VirtualHost // lower-cased domain, port included when given
	suffix  []wildcard              // "*.x.com", longest first
	prefix  []wildcard              // "x.*", longest first
	any     *VirtualHost            // "*"
	Headers HeaderOps               // route-config level mutations
	// MatchesRequestID: a route's header matcher reads x-request-id,
	// which the connection manager generates before matching when the
	// request has none.
	MatchesRequestID bool
}

type wildcard struct {
	s  string // without the '*', lower-cased
	vh *VirtualHost
}

// VirtualHost is one compiled virtual host.
type VirtualHost struct {
	Name    string
	Routes  []*Route
	Headers HeaderOps
}

// Kind is what a route does.
type Kind uint8

// Route actions weft proxy implements.
const (
	ToCluster  Kind = iota // forward to Cluster
	ToWeighted             // forward to one of Weighted
	Direct                 // answer DirectStatus, DirectBody
)

// Route is one compiled route. Immutable.
type Route struct {
	Name string
	m    matcher
	// Decorator is decorator.operation: the name of the route's spans.
	Decorator string

	Kind     Kind
	Cluster  string
	Weighted []WeightedCluster
	total    uint32 // sum of weights, or total_weight when given

	DirectStatus int
	DirectBody   string

	PrefixRewrite string
	prefixLen     int // length of the matched prefix, for PrefixRewrite
	RegexRewrite  *regexp.Regexp
	RegexSubst    string
	HostRewrite   string

	// Timeout bounds the whole upstream exchange; 0 disables it.
	Timeout time.Duration
	// IdleTimeout overrides the connection manager's stream idle timeout
	// when HasIdleTimeout; 0 disables it.
	IdleTimeout    time.Duration
	HasIdleTimeout bool
	// MaxStreamDuration bounds the whole stream; 0 means none.
	MaxStreamDuration time.Duration
	// GRPCTimeoutHeaderMax, when UseGRPCTimeout, makes a grpc-timeout
	// request header the route timeout, capped by it unless it is 0.
	UseGRPCTimeout       bool
	GRPCTimeoutHeaderMax time.Duration
	GRPCTimeoutOffset    time.Duration

	Retry   *RetryPolicy // nil: no retries
	Headers HeaderOps
	// mutations are the request header mutations of a request Pick
	// sends to Cluster; nil when none.
	mutations *RequestMutations
	// Upgrades overrides the connection manager's upgrade_configs per
	// upgrade type (lower case).
	Upgrades map[string]bool
}

// WeightedCluster is one target of a weighted route.
type WeightedCluster struct {
	Name    string
	Weight  uint32
	Headers HeaderOps
	// mutations are the request header mutations of a request Pick
	// sends to this cluster (its, and its route's levels'); nil when none.
	mutations *RequestMutations
}

// Pick returns the cluster a request goes to; for weighted routes it draws
// one in proportion to the weights. ops are the target's own header
// mutations (nil for single-cluster routes), m all the request header
// mutations of the request (ops' and its route's levels', compiled with
// the routes; nil when none).
func (r *Route) Pick() (name string, ops *HeaderOps, m *RequestMutations) {
	if r.Kind == ToCluster {
		return r.Cluster, nil, r.mutations
	}
	n := rand.Uint32N(r.total)
	for i := range r.Weighted {
		w := &r.Weighted[i]
		if n < w.Weight {
			return w.Name, &w.Headers, w.mutations
		}
		n -= w.Weight
	}
	// total_weight larger than the sum: Envoy sends the remainder nowhere
	// useful; weft picks the last cluster with a weight.
	for i := len(r.Weighted) - 1; i >= 0; i-- {
		if r.Weighted[i].Weight > 0 {
			return r.Weighted[i].Name, &r.Weighted[i].Headers, r.Weighted[i].mutations
		}
	}
	w := &r.Weighted[len(r.Weighted)-1]
	return w.Name, &w.Headers, w.mutations
}

// RewritePath returns the upstream path (without query) for a request path
// that matched r: prefix_rewrite replaces the matched prefix (or the whole
// path of a path match), regex_rewrite substitutes every match.
func (r *Route) RewritePath(path string) string {
	switch {
	case r.RegexRewrite != nil:
		return r.RegexRewrite.ReplaceAllString(path, r.RegexSubst)
	case r.PrefixRewrite != "" && r.prefixLen <= len(path):
		return r.PrefixRewrite + path[r.prefixLen:]
	}
	return path
}

// RewritesPath reports whether r has a prefix or regex rewrite: Envoy's
// router then sends the request's path in x-envoy-original-path whether
// the rewrite changed it or not (finalizePathHeader).
func (r *Route) RewritesPath() bool { return r.PrefixRewrite != "" || r.RegexRewrite != nil }

// Match returns the virtual host and route for a request, or nils. The
// request's :scheme is req.URL.Scheme (headerValue).
func (c *Config) Match(req *http.Request, path string) (*VirtualHost, *Route) {
	vh := c.VirtualHost(req.Host)
	if vh == nil {
		return nil, nil
	}
	for _, r := range vh.Routes {
		if r.m.match(req, path) {
			return vh, r
		}
	}
	return vh, nil
}

// VirtualHost finds the virtual host for a Host header as Envoy does:
// exact domain, then the longest suffix wildcard, then the longest prefix
// wildcard, then "*". Envoy matches the Host value including its port.
func (c *Config) VirtualHost(host string) *VirtualHost {
	h := lower(host)
	if vh, ok := c.exact[h]; ok {
		return vh
	}
	for _, w := range c.suffix {
		if len(h) > len(w.s) && strings.HasSuffix(h, w.s) {
			return w.vh
		}
	}
	for _, w := range c.prefix {
		if len(h) > len(w.s) && strings.HasPrefix(h, w.s) {
			return w.vh
		}
	}
	return c.any
}

// EachVirtualHost calls f with every virtual host, each once, until f
// returns false.
func (c *Config) EachVirtualHost(f func(*VirtualHost) bool) {
	for _, vh := range c.exact {
		if !f(vh) {
			return
		}
	}
	for _, w := range c.suffix {
		if !f(w.vh) {
			return
		}
	}
	for _, w := range c.prefix {
		if !f(w.vh) {
			return
		}
	}
	if c.any != nil {
		f(c.any)
	}
}

// lower avoids an allocation when s is already lower case, the common case.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// Compile builds a Config from a RouteConfiguration.
func Compile(rc *routev3.RouteConfiguration) (*Config, error) {
	path := "route_configuration " + rc.GetName()
	// validate_clusters has no effect: weft answers 503 NC for unknown
	// clusters at request time, which is Envoy's behaviour for RDS routes.
	if err := strict.Fields(rc, path, "name", "virtual_hosts", "response_headers_to_add",
		"response_headers_to_remove", "request_headers_to_add", "request_headers_to_remove",
		"validate_clusters", "metadata", "ignore_port_in_host_matching"); err != nil {
		return nil, err
	}
	if rc.GetIgnorePortInHostMatching() {
		return nil, strict.Value(path, "ignore_port_in_host_matching", true, "hosts are matched with their port")
	}
	c := &Config{Name: rc.GetName(), exact: make(map[string]*VirtualHost)}
	var err error
	c.Headers, err = compileHeaderOps(path, rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
		rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove())
	if err != nil {
		return nil, err
	}
	seen := map[string]string{}
	for i, v := range rc.GetVirtualHosts() {
		vp := strict.Join(path, "virtual_hosts", i)
		vh, err := compileVirtualHost(v, vp)
		if err != nil {
			return nil, err
		}
		compileMutations(c, vh)
		for _, r := range vh.Routes {
			for _, h := range r.m.headers {
				c.MatchesRequestID = c.MatchesRequestID || h.name == "X-Request-Id"
			}
		}
		if len(v.GetDomains()) == 0 {
			return nil, fmt.Errorf("%s: domains must not be empty", vp)
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			if other, dup := seen[d]; dup {
				return nil, fmt.Errorf("%s: domain %q is also in virtual host %q", vp, d, other)
			}
			seen[d] = v.GetName()
			switch {
			case d == "*":
				c.any = vh
			case strings.HasPrefix(d, "*"):
				c.suffix = append(c.suffix, wildcard{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				c.prefix = append(c.prefix, wildcard{d[:len(d)-1], vh})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("%s: domain %q: '*' only at the start or end", vp, d)
			default:
				c.exact[d] = vh
			}
		}
	}
	sort.SliceStable(c.suffix, func(i, j int) bool { return len(c.suffix[i].s) > len(c.suffix[j].s) })
	sort.SliceStable(c.prefix, func(i, j int) bool { return len(c.prefix[i].s) > len(c.prefix[j].s) })
	return c, nil
}

func compileVirtualHost(v *routev3.VirtualHost, path string) (*VirtualHost, error) {
	if err := strict.Fields(v, path, "name", "domains", "routes", "request_headers_to_add",
		"request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
		"retry_policy", "metadata", "typed_per_filter_config"); err != nil {
		return nil, err
	}
	if len(v.GetTypedPerFilterConfig()) > 0 {
		return nil, &strict.UnsupportedError{Path: path, Field: "typed_per_filter_config"}
	}
	vh := &VirtualHost{Name: v.GetName()}
	var err error
	vh.Headers, err = compileHeaderOps(path, v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove(),
		v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove())
	if err != nil {
		return nil, err
	}
	var vhRetry *RetryPolicy
	if v.GetRetryPolicy() != nil {
		vhRetry, err = compileRetry(v.GetRetryPolicy(), strict.Join(path, "retry_policy"))
		if err != nil {
			return nil, err
		}
	}
	for i, r := range v.GetRoutes() {
		cr, err := compileRoute(r, strict.Join(path, "routes", i), vhRetry)
		if err != nil {
			return nil, err
		}
		vh.Routes = append(vh.Routes, cr)
	}
	return vh, nil
}

func compileRoute(r *routev3.Route, path string, vhRetry *RetryPolicy) (*Route, error) {
	// tracing, stat_prefix and metadata only name things for tracing and
	// stats that weft does not emit; decorator names the route's spans.
	if err := strict.Fields(r, path, "name", "match", "route", "direct_response", "metadata",
		"decorator", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "tracing", "stat_prefix",
		"typed_per_filter_config"); err != nil {
		return nil, err
	}
	if len(r.GetTypedPerFilterConfig()) > 0 {
		return nil, &strict.UnsupportedError{Path: path, Field: "typed_per_filter_config"}
	}
	out := &Route{Name: r.GetName(), Timeout: DefaultTimeout, Decorator: r.GetDecorator().GetOperation()}
	m, err := compileMatch(r.GetMatch(), strict.Join(path, "match"))
	if err != nil {
		return nil, err
	}
	out.m = m
	out.Headers, err = compileHeaderOps(path, r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(),
		r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove())
	if err != nil {
		return nil, err
	}
	switch {
	case r.GetDirectResponse() != nil:
		d := r.GetDirectResponse()
		dp := strict.Join(path, "direct_response")
		if err := strict.Fields(d, dp, "status", "body"); err != nil {
			return nil, err
		}
		if err := strict.Fields(d.GetBody(), strict.Join(dp, "body"), "inline_string", "inline_bytes"); err != nil {
			return nil, err
		}
		if d.GetStatus() < 200 || d.GetStatus() > 599 {
			return nil, fmt.Errorf("%s: status %d out of range [200, 600)", dp, d.GetStatus())
		}
		out.Kind, out.DirectStatus = Direct, int(d.GetStatus())
		out.DirectBody = d.GetBody().GetInlineString() + string(d.GetBody().GetInlineBytes())
		return out, nil
	case r.GetRoute() != nil:
		if err := compileAction(out, r.GetRoute(), strict.Join(path, "route"), vhRetry); err != nil {
			return nil, err
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%s: weft proxy implements the route and direct_response actions only", path)
	}
}

func compileAction(out *Route, a *routev3.RouteAction, path string, vhRetry *RetryPolicy) error {
	if err := strict.Fields(a, path, "cluster", "weighted_clusters", "prefix_rewrite",
		"regex_rewrite", "host_rewrite_literal", "timeout", "idle_timeout", "retry_policy",
		"max_grpc_timeout", "grpc_timeout_offset", "max_stream_duration", "upgrade_configs",
		"cluster_not_found_response_code"); err != nil {
		return err
	}
	if a.GetClusterNotFoundResponseCode() != routev3.RouteAction_SERVICE_UNAVAILABLE {
		return strict.Value(path, "cluster_not_found_response_code", a.GetClusterNotFoundResponseCode(), "weft answers 503")
	}
	for i, u := range a.GetUpgradeConfigs() {
		up := strict.Join(path, "upgrade_configs", i)
		if err := strict.Fields(u, up, "upgrade_type", "enabled"); err != nil {
			return err
		}
		if !strings.EqualFold(u.GetUpgradeType(), "websocket") {
			return strict.Value(up, "upgrade_type", u.GetUpgradeType(), "only websocket upgrades are proxied")
		}
		if out.Upgrades == nil {
			out.Upgrades = map[string]bool{}
		}
		out.Upgrades["websocket"] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	switch {
	case a.GetCluster() != "":
		out.Kind, out.Cluster = ToCluster, a.GetCluster()
	case a.GetWeightedClusters() != nil:
		wc := a.GetWeightedClusters()
		wp := strict.Join(path, "weighted_clusters")
		if err := strict.Fields(wc, wp, "clusters", "total_weight", "runtime_key_prefix"); err != nil {
			return err
		}
		out.Kind = ToWeighted
		var sum uint32
		for i, c := range wc.GetClusters() {
			cp := strict.Join(wp, "clusters", i)
			if err := strict.Fields(c, cp, "name", "weight", "request_headers_to_add",
				"request_headers_to_remove", "response_headers_to_add",
				"response_headers_to_remove", "metadata_match"); err != nil {
				return err
			}
			if c.GetMetadataMatch() != nil {
				return &strict.UnsupportedError{Path: cp, Field: "metadata_match"}
			}
			if c.GetName() == "" {
				return fmt.Errorf("%s: name is required", cp)
			}
			ops, err := compileHeaderOps(cp, c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(),
				c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove())
			if err != nil {
				return err
			}
			w := c.GetWeight().GetValue()
			sum += w
			out.Weighted = append(out.Weighted, WeightedCluster{Name: c.GetName(), Weight: w, Headers: ops})
		}
		if len(out.Weighted) == 0 {
			return fmt.Errorf("%s: clusters must not be empty", wp)
		}
		out.total = sum
		if t := wc.GetTotalWeight(); t != nil {
			if t.GetValue() != sum {
				return fmt.Errorf("%s: total_weight %d does not equal the sum of weights %d", wp, t.GetValue(), sum)
			}
		}
		if out.total == 0 {
			return fmt.Errorf("%s: the weights sum to 0", wp)
		}
	default:
		return fmt.Errorf("%s: weft proxy implements the cluster and weighted_clusters specifiers only", path)
	}
	if a.GetPrefixRewrite() != "" {
		if out.m.kind != matchPrefix && out.m.kind != matchPath && out.m.kind != matchSeparated {
			return fmt.Errorf("%s: prefix_rewrite needs a prefix or path match", path)
		}
		out.PrefixRewrite = a.GetPrefixRewrite()
		out.prefixLen = len(out.m.s)
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		rp := strict.Join(path, "regex_rewrite")
		if err := strict.Fields(rr, rp, "pattern", "substitution"); err != nil {
			return err
		}
		pp := strict.Join(rp, "pattern")
		if err := strict.Fields(rr.GetPattern(), pp, "google_re2", "regex"); err != nil {
			return err
		}
		// Rewrites substitute every match, so the pattern is not anchored.
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return fmt.Errorf("%s: invalid regex: %w", pp, err)
		}
		out.RegexRewrite, out.RegexSubst = re, goSubst(rr.GetSubstitution())
	}
	out.HostRewrite = a.GetHostRewriteLiteral()
	if t := a.GetTimeout(); t != nil {
		out.Timeout = t.AsDuration()
	}
	if t := a.GetIdleTimeout(); t != nil {
		out.IdleTimeout, out.HasIdleTimeout = t.AsDuration(), true
	}
	if t := a.GetMaxGrpcTimeout(); t != nil {
		out.UseGRPCTimeout, out.GRPCTimeoutHeaderMax = true, t.AsDuration()
	}
	if t := a.GetGrpcTimeoutOffset(); t != nil {
		out.GRPCTimeoutOffset = t.AsDuration()
	}
	if msd := a.GetMaxStreamDuration(); msd != nil {
		mp := strict.Join(path, "max_stream_duration")
		if err := strict.Fields(msd, mp, "max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset"); err != nil {
			return err
		}
		out.MaxStreamDuration = msd.GetMaxStreamDuration().AsDuration()
		if t := msd.GetGrpcTimeoutHeaderMax(); t != nil {
			out.UseGRPCTimeout, out.GRPCTimeoutHeaderMax = true, t.AsDuration()
		}
		if t := msd.GetGrpcTimeoutHeaderOffset(); t != nil {
			out.GRPCTimeoutOffset = t.AsDuration()
		}
	}
	out.Retry = vhRetry
	if a.GetRetryPolicy() != nil {
		rp, err := compileRetry(a.GetRetryPolicy(), strict.Join(path, "retry_policy"))
		if err != nil {
			return err
		}
		out.Retry = rp
	}
	return nil
}

// goSubst turns RE2 substitution syntax (\1) into Go's (${1}).
func goSubst(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			fmt.Fprintf(&b, "${%c}", s[i+1])
			i++
			continue
		}
		if s[i] == '$' {
			b.WriteString("$$")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
