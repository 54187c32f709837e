package listener

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Predicate is a compiled ListenerFilterChainMatchPredicate: it decides,
// from a connection's (original) destination port, whether a listener
// filter is disabled for it.
type Predicate func(dstPort uint16) bool

// CompilePredicate compiles a listener filter's filter_disabled.
func CompilePredicate(p *listenerv3.ListenerFilterChainMatchPredicate, path string) (Predicate, error) {
	if err := strict.Fields(p, path, "or_match", "and_match", "not_match", "any_match", "destination_port_range"); err != nil {
		return nil, err
	}
	list := func(set *listenerv3.ListenerFilterChainMatchPredicate_MatchSet, field string) ([]Predicate, error) {
		var out []Predicate
		for i, r := range set.GetRules() {
			q, err := CompilePredicate(r, strict.Join(path+"."+field, "rules", i))
			if err != nil {
				return nil, err
			}
			out = append(out, q)
		}
		return out, nil
	}
	switch r := p.GetRule().(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		return func(uint16) bool { return r.AnyMatch }, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		q, err := CompilePredicate(r.NotMatch, path+".not_match")
		if err != nil {
			return nil, err
		}
		return func(port uint16) bool { return !q(port) }, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_OrMatch:
		qs, err := list(r.OrMatch, "or_match")
		if err != nil {
			return nil, err
		}
		return func(port uint16) bool {
			for _, q := range qs {
				if q(port) {
					return true
				}
			}
			return false
		}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_AndMatch:
		qs, err := list(r.AndMatch, "and_match")
		if err != nil {
			return nil, err
		}
		return func(port uint16) bool {
			for _, q := range qs {
				if !q(port) {
					return false
				}
			}
			return true
		}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		return func(port uint16) bool { return int32(port) >= lo && int32(port) < hi }, nil
	default:
		return nil, fmt.Errorf("%s: a rule is required", path)
	}
}
