package evloop

// A route's request header mutations (Target.Headers) as the loops apply
// them to the upstream request they write: the goroutine path's rule
// (route.Levels.Request) on the values of the request's fields the
// mutations name.

import (
	"maps"
	"net/http"
	"slices"
	"strings"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// OwnHeader reports whether the loops treat the request header named name
// (in any case) themselves: framing, hop-by-hop fields, the host, the
// headers weft adds or reads to decide how to forward (the goroutine
// path's Transport treats each its own way), and cache-control, which
// net/http's server adds to an HTTP/1.1 request with "Pragma: no-cache"
// and none (so the goroutine path sends it, and its mutations see it).
// Target.Headers must name none of them: a route whose mutations do is
// the goroutine path's.
func OwnHeader(name string) bool {
	switch strings.ToLower(name) {
	case "host", "content-length", "transfer-encoding", "te", "trailer", "connection", "keep-alive",
		"proxy-connection", "upgrade", "proxy-authenticate", "proxy-authorization", "expect", "cookie",
		"user-agent", "x-forwarded-proto", "x-forwarded-for", "x-request-id", "x-envoy-original-path",
		"idempotency-key", "x-idempotency-key", "cache-control":
		return true
	}
	return false
}

// headerMutation takes the request's fields that a Target's header
// mutations name out of those copied upstream (take), and gives them
// back as the mutations leave them (result), to be written after the
// others: the goroutine path's Transport writes its fields in no order
// an upstream may rely on either.
type headerMutation struct {
	ops *proxyroute.Levels // nil: none
	h   http.Header        // the fields taken, by canonical name
}

// take reports whether the field name: value is one m's mutations
// name, and then keeps its value for result.
func take[S ~string | ~[]byte](m *headerMutation, name, value S) bool {
	if m.ops == nil {
		return false
	}
	named := false
	m.ops.RequestNames(func(k string) bool {
		named = proxyroute.EqualFoldASCII(name, k)
		return !named
	})
	if !named {
		return false
	}
	if m.h == nil {
		m.h = make(http.Header)
	}
	k := http.CanonicalHeaderKey(string(name))
	m.h[k] = append(m.h[k], string(value))
	return true
}

// result applies the mutations to the fields taken and calls yield with
// each field that goes upstream, by name (canonical) and value.
func (m *headerMutation) result(yield func(name, value string)) {
	if m.ops == nil {
		return
	}
	if m.h == nil {
		m.h = make(http.Header)
	}
	m.ops.Request(m.h)
	for _, k := range slices.Sorted(maps.Keys(m.h)) {
		for _, v := range m.h[k] {
			yield(k, v)
		}
	}
}
