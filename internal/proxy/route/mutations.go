package route

import (
	"slices"
	"strings"
)

// RequestMutations are the request header mutations of the requests a
// route sends to one of its clusters (its Levels), compiled with the
// routes so that a writer applies them without building anything per
// request: the event loops keep the request's fields they name in
// buffers of their own (Fields) and write them upstream by these names.
// Immutable.
type RequestMutations struct {
	Levels Levels
	names  []string // the distinct names the mutations name, canonical, sorted
	lower  []string // names[i] in lower case, as HTTP/2 writes it
}

// newRequestMutations compiles l's request mutations: nil when l has
// none.
func newRequestMutations(l Levels) *RequestMutations {
	m := &RequestMutations{Levels: l}
	for _, ops := range l {
		if ops == nil {
			continue
		}
		m.names = append(m.names, ops.RequestRemove...)
		for i := range ops.RequestAdd {
			m.names = append(m.names, ops.RequestAdd[i].Key)
		}
	}
	if len(m.names) == 0 {
		return nil
	}
	slices.Sort(m.names)
	m.names = slices.Compact(m.names)
	for _, n := range m.names {
		m.lower = append(m.lower, strings.ToLower(n))
	}
	return m
}

// RequestLevels is m's Levels; nil when m is.
func (m *RequestMutations) RequestLevels() *Levels {
	if m == nil {
		return nil
	}
	return &m.Levels
}

// NumNames is the number of distinct header names the mutations name:
// the only headers whose values they may change.
func (m *RequestMutations) NumNames() int { return len(m.names) }

// Name is the i'th of those names, canonical (in sort order: i < j
// gives Name(i) < Name(j)) and in lower case.
func (m *RequestMutations) Name(i int) (canonical, lower string) { return m.names[i], m.lower[i] }

// Index is the i of Name(i) that is key (canonical, as Fields get it), or
// -1.
func (m *RequestMutations) Index(key string) int {
	for i, n := range m.names {
		if n == key {
			return i
		}
	}
	return -1
}

// Named is the i of the Name(i) that is name in any case, or -1 when the
// mutations do not name it.
func Named[S ~string | ~[]byte](m *RequestMutations, name S) int {
	for i, n := range m.names {
		if EqualFoldASCII(name, n) {
			return i
		}
	}
	return -1
}

// compileMutations gives each route of c and each of their weighted
// clusters its RequestMutations, from its levels.
func compileMutations(c *Config, vh *VirtualHost) {
	for _, r := range vh.Routes {
		r.mutations = newRequestMutations(Levels{nil, &r.Headers, &vh.Headers, &c.Headers})
		for i := range r.Weighted {
			w := &r.Weighted[i]
			w.mutations = newRequestMutations(Levels{&w.Headers, &r.Headers, &vh.Headers, &c.Headers})
		}
	}
}
