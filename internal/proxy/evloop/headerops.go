package evloop

// A route's request header mutations (Target.Headers) as the loops apply
// them to the upstream request they write: the goroutine path's rule
// (route.Levels.Request) on the values of the request's fields the
// mutations name.

import (
	"slices"

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
	// Lowered into a buffer (the loops ask it of each route's mutations
	// on each request): the longest name is x-envoy-original-path.
	var buf [len("x-envoy-original-path")]byte
	if len(name) > len(buf) {
		return false
	}
	lower := buf[:len(name)]
	for i := range len(name) {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower) { // compared, not converted
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
// an upstream may rely on either. The loop's one (loop.mut) is reused
// from request to request: its fields keep the request's values as they
// are in its head (or HTTP/2 fields) and the mutations' as compiled, so
// that applying them allocates nothing once the fields have grown (an
// http.Header, the sorted keys and a []string per add cost 6 a request
// in BenchmarkHTTPOneHopHeaderAdd; docs/bench/proxy.md, round 30).
type headerMutation struct {
	m      *proxyroute.RequestMutations // nil: none
	fields []mutField                   // by the mutations' rule (route.Fields), in order
}

// mutField is one field of a headerMutation.
type mutField struct {
	name  int    // the i of its name, Name(i) of the RequestMutations
	value string // its value when !inHead
	// head is its value when inHead: the request's, in the head being
	// written upstream (valid until it is written).
	head   []byte
	inHead bool
}

// reset makes m the mutations of the request whose fields are taken
// next, with none taken.
func (h *headerMutation) reset(m *proxyroute.RequestMutations) *headerMutation {
	clear(h.fields) // no head kept past its request
	h.m, h.fields = m, h.fields[:0]
	return h
}

// take reports whether the field name: value of a head is one h's
// mutations name, and then keeps it for result: value must stay as it
// is until then.
func (h *headerMutation) take(name, value []byte) bool {
	if h.m == nil {
		return false
	}
	i := proxyroute.Named(h.m, name)
	if i >= 0 {
		h.fields = append(h.fields, mutField{name: i, head: value, inHead: true})
	}
	return i >= 0
}

// takeString is take for an HTTP/2 field.
func (h *headerMutation) takeString(name, value string) bool {
	if h.m == nil {
		return false
	}
	i := proxyroute.Named(h.m, name)
	if i >= 0 {
		h.fields = append(h.fields, mutField{name: i, value: value})
	}
	return i >= 0
}

// result applies the mutations to the fields taken (the goroutine path's
// rule, route.Levels.RequestFields) and calls yield with each field that
// goes upstream, by name (canonical, and in lower case) and value, in
// the order of their names (and then as the rule leaves them); then h
// has none.
func (h *headerMutation) result(yield func(name, lower string, f *mutField)) {
	if h.m == nil {
		return
	}
	h.m.Levels.RequestFields(h)
	slices.SortStableFunc(h.fields, func(a, b mutField) int { return a.name - b.name })
	for i := range h.fields {
		f := &h.fields[i]
		canonical, lower := h.m.Name(f.name)
		yield(canonical, lower, f)
	}
	// Written: the loop's fields keep no head (a buffer the loop may
	// since have trimmed) or value past it, however long the loop then
	// waits for its next request.
	h.reset(nil)
}

// appendValue appends f's value to b.
func (f *mutField) appendValue(b []byte) []byte {
	if f.inHead {
		return append(b, f.head...)
	}
	return append(b, f.value...)
}

// String is f's value.
func (f *mutField) String() string {
	if f.inHead {
		return string(f.head)
	}
	return f.value
}

// The route.Fields of a headerMutation: its fields, by the canonical
// names of its mutations.

func (h *headerMutation) Has(key string) bool {
	i := h.m.Index(key)
	for j := range h.fields {
		if h.fields[j].name == i {
			return true
		}
	}
	return false
}

func (h *headerMutation) Del(key string) {
	i := h.m.Index(key)
	h.fields = slices.DeleteFunc(h.fields, func(f mutField) bool { return f.name == i })
}

func (h *headerMutation) Set(key, value string) {
	h.Del(key)
	h.Add(key, value)
}

func (h *headerMutation) Add(key, value string) {
	h.fields = append(h.fields, mutField{name: h.m.Index(key), value: value})
}
