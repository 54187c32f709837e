package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// App Mesh match conditions become Envoy route matches. Regexes are RE2
// (safe_regex), as App Mesh used since Envoy 1.17.

// httpMatch converts an HTTP route match; a nil match matches everything.
func httpMatch(m *appmesh.HttpRouteMatch) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm
	}
	setPath(rm, m.Prefix, m.Path)
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, headerMatcher(str(h.Name), h.Match, boolean(h.Invert)))
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, exactHeader(":method", string(m.Method)))
	}
	if m.Scheme != "" {
		rm.Headers = append(rm.Headers, exactHeader(":scheme", string(m.Scheme)))
	}
	rm.QueryParameters = queryMatchers(m.QueryParameters)
	return rm
}

// setPath sets prefix, exact path or regex path; prefix wins when the
// input (invalid for App Mesh) has several.
func setPath(rm *routev3.RouteMatch, prefix *string, path *appmesh.HttpPathMatch) {
	switch {
	case prefix != nil:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: *prefix}
	case path != nil && path.Exact != nil:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: *path.Exact}
	case path != nil && path.Regex != nil:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regex(*path.Regex)}
	}
}

func queryMatchers(qs []appmesh.HttpQueryParameter) []*routev3.QueryParameterMatcher {
	var out []*routev3.QueryParameterMatcher
	for _, q := range qs {
		qm := &routev3.QueryParameterMatcher{Name: str(q.Name)}
		if q.Match != nil && q.Match.Exact != nil {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: *q.Match.Exact}}}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		out = append(out, qm)
	}
	return out
}

// grpcMatch converts a gRPC route match: service and method become the
// request path /<service>/<method>.
func grpcMatch(m *appmesh.GrpcRouteMatch) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm
	}
	switch {
	case m.ServiceName != nil && m.MethodName != nil:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: "/" + *m.ServiceName + "/" + *m.MethodName}
	case m.ServiceName != nil:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/" + *m.ServiceName + "/"}
	}
	for _, md := range m.Metadata {
		rm.Headers = append(rm.Headers, headerMatcher(str(md.Name), metadataMethod(md.Match), boolean(md.Invert)))
	}
	return rm
}

// metadataMethod views a gRPC metadata match as the header match it is.
func metadataMethod(m *appmesh.GrpcRouteMetadataMatchMethod) *appmesh.HeaderMatchMethod {
	if m == nil {
		return nil
	}
	return &appmesh.HeaderMatchMethod{Exact: m.Exact, Prefix: m.Prefix, Range: m.Range, Regex: m.Regex, Suffix: m.Suffix}
}

// headerMatcher converts a header match; without a method the header only
// has to be present. Ranges are App Mesh's [start, end), as Envoy's.
func headerMatcher(name string, m *appmesh.HeaderMatchMethod, invert bool) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	sm := &matcherv3.StringMatcher{}
	switch {
	case m == nil:
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return hm
	case m.Exact != nil:
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: *m.Exact}
	case m.Prefix != nil:
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: *m.Prefix}
	case m.Suffix != nil:
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: *m.Suffix}
	case m.Regex != nil:
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(*m.Regex)}
	case m.Range != nil:
		s, _ := i64(m.Range.Start)
		e, _ := i64(m.Range.End)
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: s, End: e}}
		return hm
	default:
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return hm
	}
	hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	return hm
}

// legacyHeaderMatchers rewrites string_match header matchers into the
// older fields (exact_match, prefix_match, suffix_match,
// safe_regex_match): gRPC C-core 1.51, which Debian ships, NACKs a route
// with string_match ("Invalid route header matcher specified"), and
// grpc-go and grpc-js accept both. Envoy gets string_match: it has
// deprecated the older fields.
func legacyHeaderMatchers(hs []*routev3.HeaderMatcher) {
	for _, h := range hs {
		sm := h.GetStringMatch()
		if sm == nil || sm.GetIgnoreCase() {
			continue // ignore_case has no older form; weft never sets it
		}
		//nolint:staticcheck // the deprecated fields are the point: older gRPC clients read only those
		switch p := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: p.Exact}
		case *matcherv3.StringMatcher_Prefix:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: p.Prefix}
		case *matcherv3.StringMatcher_Suffix:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: p.Suffix}
		case *matcherv3.StringMatcher_SafeRegex:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: p.SafeRegex}
		}
	}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
}

// regex is an RE2 matcher with Envoy's default engine.
func regex(re string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: re} }
