// Package shapetest builds test documents from a service model: documents
// that set every member of every shape, so that a round trip through a
// client and a server shows that nothing is lost.
package shapetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/shape"
)

// Maximal builds documents that set every member of a shape and of every
// shape under it, and use every enum value. A union (and any Exclusive
// group) can hold only one member, so one document cannot do it all: Docs
// returns as many as it takes, each choosing the members and values the
// ones before it left out.
type Maximal struct {
	Model *shape.Model
	// Exclusive lists, per structure shape, members that the service
	// accepts only one at a time although the model does not mark the
	// shape a union.
	Exclusive map[string][]string
	// Value, when it returns ok, gives the value of a member (path is the
	// dotted JSON path, shapeName the member's shape). It lets a test
	// choose names that exist and ports that match.
	Value func(path, shapeName string, variant int) (v any, ok bool)
}

// Docs returns documents of shapeName that together set every member and
// enum value under it (see Members).
func (g *Maximal) Docs(shapeName string) []any {
	set := map[string]bool{}
	var docs []any
	for v := 0; v < 256 && !g.complete(shapeName, set); v++ {
		before := len(set)
		docs = append(docs, g.value(shapeName, "", v, set, 0))
		if len(set) == before {
			break // nothing new: the rest cannot be reached
		}
	}
	return docs
}

// Members returns every "Shape.member" and "Shape=enumValue" under
// shapeName: what Docs covers.
func (g *Maximal) Members(shapeName string) []string {
	var out []string
	g.walk(shapeName, map[string]bool{}, func(s *shape.Shape) {
		out = append(out, items(s)...)
	})
	slices.Sort(out)
	return out
}

// Covered returns the Members that docs set.
func (g *Maximal) Covered(shapeName string, docs []any) []string {
	set := map[string]bool{}
	for _, d := range docs {
		g.record(shapeName, d, set)
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (g *Maximal) record(name string, doc any, set map[string]bool) {
	s := g.Model.Shapes[name]
	switch s.Kind {
	case shape.Structure:
		obj, _ := doc.(map[string]any)
		for _, m := range s.Members {
			if v, ok := obj[m.Name]; ok {
				set[s.Name+"."+m.Name] = true
				g.record(m.Shape, v, set)
			}
		}
	case shape.List:
		arr, _ := doc.([]any)
		for _, e := range arr {
			g.record(s.Elem, e, set)
		}
	case shape.Map:
		obj, _ := doc.(map[string]any)
		for k, v := range obj {
			g.record(s.Key, k, set)
			g.record(s.Value, v, set)
		}
	case shape.String:
		if str, ok := doc.(string); ok && len(s.Enum) > 0 {
			set[s.Name+"="+str] = true
		}
	}
}

func items(s *shape.Shape) []string {
	var out []string
	switch s.Kind {
	case shape.Structure:
		for _, m := range s.Members {
			if m.Location == "" {
				out = append(out, s.Name+"."+m.Name)
			}
		}
	case shape.String:
		for _, e := range s.Enum {
			out = append(out, s.Name+"="+e)
		}
	}
	return out
}

// complete reports whether set holds every item under shapeName.
func (g *Maximal) complete(shapeName string, set map[string]bool) bool {
	done := true
	g.walk(shapeName, map[string]bool{}, func(s *shape.Shape) {
		for _, it := range items(s) {
			if !set[it] {
				done = false
			}
		}
	})
	return done
}

func (g *Maximal) walk(name string, seen map[string]bool, fn func(*shape.Shape)) {
	s := g.Model.Shapes[name]
	if s == nil || seen[name] {
		return
	}
	seen[name] = true
	fn(s)
	switch s.Kind {
	case shape.Structure:
		for _, m := range s.Members {
			g.walk(m.Shape, seen, fn)
		}
	case shape.List:
		g.walk(s.Elem, seen, fn)
	case shape.Map:
		g.walk(s.Key, seen, fn)
		g.walk(s.Value, seen, fn)
	}
}

// choices returns the members of which a document may set only one.
func (g *Maximal) choices(s *shape.Shape) []string {
	if s.Kind != shape.Structure {
		return nil
	}
	if s.Union {
		var names []string
		for _, m := range s.Members {
			names = append(names, m.Name)
		}
		return names
	}
	return g.Exclusive[s.Name]
}

func (g *Maximal) value(name, path string, v int, set map[string]bool, depth int) any {
	if depth > 32 {
		panic(fmt.Sprintf("shapetest: shape %s nests too deep at %s", name, path))
	}
	if g.Value != nil {
		if val, ok := g.Value(path, name, v); ok {
			return val
		}
	}
	s := g.Model.Shapes[name]
	if s == nil {
		panic(fmt.Sprintf("shapetest: the model has no shape %s", name))
	}
	switch s.Kind {
	case shape.Structure:
		obj := map[string]any{}
		only := g.choices(s)
		var pick string
		if len(only) > 0 {
			// The first member whose subtree still lacks something, else
			// one chosen by the variant.
			pick = only[v%len(only)]
			for _, name := range only {
				m, _ := s.Member(name)
				if !set[s.Name+"."+name] || !g.complete(m.Shape, set) {
					pick = name
					break
				}
			}
		}
		for _, m := range s.Members {
			if m.Location != "" {
				continue
			}
			if pick != "" && slices.Contains(only, m.Name) && m.Name != pick {
				continue
			}
			set[s.Name+"."+m.Name] = true
			obj[m.Name] = g.value(m.Shape, join(path, m.Name), v, set, depth+1)
		}
		return obj
	case shape.List:
		n := 1
		if s.HasMin && s.Min > 1 {
			n = int(s.Min)
		}
		arr := make([]any, n)
		for i := range arr {
			arr[i] = g.value(s.Elem, join(path, "member"), v+i, set, depth+1)
		}
		return arr
	case shape.Map:
		k := g.value(s.Key, join(path, "key"), v, set, depth+1)
		return map[string]any{fmt.Sprint(k): g.value(s.Value, join(path, "value"), v, set, depth+1)}
	case shape.String:
		if len(s.Enum) > 0 {
			e := s.Enum[v%len(s.Enum)]
			for _, cand := range s.Enum {
				if !set[s.Name+"="+cand] {
					e = cand
					break
				}
			}
			set[s.Name+"="+e] = true
			return e
		}
		return stringValue(s, path, v)
	case shape.Integer, shape.Long:
		lo, hi := int64(0), int64(1000)
		if s.HasMin {
			lo = s.Min
		}
		if s.HasMax {
			hi = s.Max
		} else if s.HasMin {
			hi = lo + 1000
		}
		return json.Number(fmt.Sprint(lo + (hi-lo)/2 + int64(v)%2))
	case shape.Boolean:
		return v%2 == 0
	case shape.Double:
		return json.Number(fmt.Sprintf("%d.5", v+1))
	case shape.Timestamp:
		return json.Number("1700000000.5")
	case shape.Blob:
		return "d2VmdA=="
	}
	panic(fmt.Sprintf("shapetest: shape %s has unknown kind %d", name, s.Kind))
}

// stringValue makes a string that satisfies the shape's length and
// pattern: its last path element and the variant, padded or cut to fit.
func stringValue(s *shape.Shape, path string, v int) string {
	base := path[strings.LastIndex(path, ".")+1:]
	if base == "" || base == "member" {
		base = strings.ToLower(s.Name[:1]) + s.Name[1:]
	}
	val := fmt.Sprintf("%s-%d", base, v)
	if s.HasMax && int64(len(val)) > s.Max {
		val = val[:s.Max]
	}
	for s.HasMin && int64(len(val)) < s.Min {
		val += "x"
	}
	if !s.Match(val) {
		panic(fmt.Sprintf("shapetest: no value for %s at %s matches %s", s.Name, path, s.Pattern))
	}
	return val
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
