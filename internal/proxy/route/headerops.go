package route

import (
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// HeaderOps are header mutations at one level (route config, virtual host,
// route or weighted cluster).
type HeaderOps struct {
	RequestAdd     []HeaderAdd
	RequestRemove  []string
	ResponseAdd    []HeaderAdd
	ResponseRemove []string
}

// AppendMode is Envoy's HeaderValueOption.append_action.
type AppendMode uint8

// Append modes.
const (
	AppendOrAdd AppendMode = iota
	AddIfAbsent
	OverwriteOrAdd
	OverwriteIfExists
)

// HeaderAdd is one header to add.
type HeaderAdd struct {
	Key, Value string // Key in canonical form
	Mode       AppendMode
	KeepEmpty  bool
}

// Empty reports whether there is nothing to do.
func (o *HeaderOps) Empty() bool {
	return len(o.RequestAdd)+len(o.RequestRemove)+len(o.ResponseAdd)+len(o.ResponseRemove) == 0
}

// Levels are the header mutations that apply to one request, most
// specific first: its weighted cluster's, its route's, its virtual
// host's, its route configuration's (nil: none at that level). Each
// level removes, then adds (apply); a later (less specific) level wins
// on conflicts, as Envoy's finalizeRequestHeaders and
// finalizeResponseHeaders order them unless
// most_specific_header_mutations_wins (which Compile refuses).
type Levels [4]*HeaderOps

// Request applies the request header mutations to h (keys canonical).
func (l *Levels) Request(h http.Header) { l.RequestFields(headerFields(h)) }

// Response applies the response header mutations to h (keys canonical).
func (l *Levels) Response(h http.Header) {
	for _, ops := range l {
		if ops != nil {
			apply(headerFields(h), ops.ResponseRemove, ops.ResponseAdd)
		}
	}
}

// RequestFields applies the request header mutations to f: what Request
// does to an http.Header, to fields a writer keeps its own way (the
// event loops: RequestMutations).
func (l *Levels) RequestFields(f Fields) {
	for _, ops := range l {
		if ops != nil {
			apply(f, ops.RequestRemove, ops.RequestAdd)
		}
	}
}

// Fields are the header fields of a request or response as header
// mutations read and change them, by canonical name (HeaderAdd.Key,
// HeaderOps.RequestRemove's entries).
type Fields interface {
	// Has reports whether a field is named key.
	Has(key string) bool
	// Del removes the fields named key.
	Del(key string)
	// Set makes value the only field named key.
	Set(key, value string)
	// Add adds a field named key, after those named key.
	Add(key, value string)
}

// headerFields are an http.Header's fields (keys canonical); Has is the
// key's presence, with values or without.
type headerFields http.Header

func (h headerFields) Has(key string) bool {
	_, ok := h[key]
	return ok
}

func (h headerFields) Del(key string)        { delete(h, key) }
func (h headerFields) Set(key, value string) { h[key] = []string{value} }
func (h headerFields) Add(key, value string) { h[key] = append(h[key], value) }

// apply is one level's mutations, as Envoy's HeaderParser evaluates them
// (evaluateHeaders): the removals; then each add decided on the headers
// as the removals left them (an add of the same level does not make a
// header present for another), those that overwrite made first and
// those that append after, in their order. An empty value is no add
// unless keep_empty_value.
func apply(f Fields, remove []string, add []HeaderAdd) {
	for _, k := range remove {
		f.Del(k)
	}
	var buf [16]bool
	had := buf[:0] // had[i]: add[i]'s header was there
	if len(add) > len(buf) {
		had = make([]bool, 0, len(add))
	}
	for i := range add {
		had = append(had, f.Has(add[i].Key))
	}
	for i := range add {
		a := &add[i]
		if (a.Value != "" || a.KeepEmpty) && (a.Mode == OverwriteOrAdd || a.Mode == OverwriteIfExists && had[i]) {
			f.Set(a.Key, a.Value)
		}
	}
	for i := range add {
		a := &add[i]
		if (a.Value != "" || a.KeepEmpty) && (a.Mode == AppendOrAdd || a.Mode == AddIfAbsent && !had[i]) {
			f.Add(a.Key, a.Value)
		}
	}
}

func compileHeaderOps(path string, reqAdd []*corev3.HeaderValueOption, reqRemove []string,
	respAdd []*corev3.HeaderValueOption, respRemove []string) (HeaderOps, error) {
	var o HeaderOps
	var err error
	if o.RequestAdd, err = compileAdds(reqAdd, strict.Join(path, "request_headers_to_add")); err != nil {
		return o, err
	}
	if o.ResponseAdd, err = compileAdds(respAdd, strict.Join(path, "response_headers_to_add")); err != nil {
		return o, err
	}
	if o.RequestRemove, err = compileRemoves(reqRemove, strict.Join(path, "request_headers_to_remove")); err != nil {
		return o, err
	}
	o.ResponseRemove, err = compileRemoves(respRemove, strict.Join(path, "response_headers_to_remove"))
	return o, err
}

func compileRemoves(in []string, path string) ([]string, error) {
	var out []string
	for i, k := range in {
		hp := fmt.Sprintf("%s[%d]", path, i)
		if err := headerString(hp, k, true); err != nil {
			return nil, err
		}
		if !modifiable(k) {
			return nil, fmt.Errorf("%s: pseudo-header or host %s cannot be removed", hp, k)
		}
		out = append(out, http.CanonicalHeaderKey(k))
	}
	return out, nil
}

// headerString checks a header name (name set) or value of a mutation as
// Envoy's proto validation does (HeaderValue's key and value,
// request_headers_to_remove's entries: well_known_regex HTTP_HEADER_NAME
// or HTTP_HEADER_VALUE, strict false): no NUL, CR or LF, at most 16 KiB,
// a name not empty. A CR or LF would end the line it is written on in an
// HTTP/1.1 upstream request, and start another header or the body.
func headerString(path, s string, name bool) error {
	what := "value"
	if name {
		what = "name"
	}
	switch {
	case name && s == "":
		return fmt.Errorf("%s: empty header name", path)
	case len(s) > 16384:
		return fmt.Errorf("%s: header %s of %d bytes, over 16384", path, what, len(s))
	case strings.ContainsAny(s, "\x00\r\n"):
		return fmt.Errorf("%s: header %s %q has a NUL, CR or LF", path, what, s)
	}
	return nil
}

// modifiable reports whether header mutations may name the header k:
// not a pseudo-header nor host, which Envoy's HeaderParser refuses to add
// or remove (HeaderUtility::isModifiableHeader, isRemovableHeader), in
// requests and responses alike.
func modifiable(k string) bool {
	return !strings.HasPrefix(k, ":") && !EqualFoldASCII(k, "host")
}

func compileAdds(in []*corev3.HeaderValueOption, path string) ([]HeaderAdd, error) {
	var out []HeaderAdd
	for i, h := range in {
		hp := strict.Join(path, "", i)
		hp = strings.Replace(hp, ".[", "[", 1)
		if err := strict.Fields(h, hp, "header", "append", "append_action", "keep_empty_value"); err != nil {
			return nil, err
		}
		if err := strict.Fields(h.GetHeader(), strict.Join(hp, "header"), "key", "value", "raw_value"); err != nil {
			return nil, err
		}
		// raw_value is read by none of Envoy's header mutations
		// (HeadersToAddEntry takes value only): without a value, the
		// add is of an empty one.
		k, v := h.GetHeader().GetKey(), h.GetHeader().GetValue()
		if err := headerString(strict.Join(hp, "header.key"), k, true); err != nil {
			return nil, err
		}
		if err := headerString(strict.Join(hp, "header.value"), v, false); err != nil {
			return nil, err
		}
		if !modifiable(k) {
			return nil, fmt.Errorf("%s: pseudo-header or host %s cannot be added", hp, k)
		}
		if strings.Contains(v, "%") {
			return nil, strict.Value(hp, "header.value", v, "%...% substitutions in header values are not implemented")
		}
		a := HeaderAdd{Key: http.CanonicalHeaderKey(k), Value: v, KeepEmpty: h.GetKeepEmptyValue()}
		switch h.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			a.Mode = AppendOrAdd
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			a.Mode = AddIfAbsent
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			a.Mode = OverwriteOrAdd
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			a.Mode = OverwriteIfExists
		}
		if h.GetAppend() != nil {
			if h.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, fmt.Errorf("%s: append and append_action are both set", hp)
			}
			if !h.GetAppend().GetValue() {
				a.Mode = OverwriteOrAdd
			}
		}
		out = append(out, a)
	}
	return out, nil
}
