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

// Apply mutates h.
func (a *HeaderAdd) Apply(h http.Header) {
	if a.Value == "" && !a.KeepEmpty {
		return
	}
	_, exists := h[a.Key]
	switch a.Mode {
	case AppendOrAdd:
		h[a.Key] = append(h[a.Key], a.Value)
	case AddIfAbsent:
		if !exists {
			h[a.Key] = []string{a.Value}
		}
	case OverwriteOrAdd:
		h[a.Key] = []string{a.Value}
	case OverwriteIfExists:
		if exists {
			h[a.Key] = []string{a.Value}
		}
	}
}

// Empty reports whether there is nothing to do.
func (o *HeaderOps) Empty() bool {
	return len(o.RequestAdd)+len(o.RequestRemove)+len(o.ResponseAdd)+len(o.ResponseRemove) == 0
}

// Levels are the header mutations that apply to one request, most
// specific first: its weighted cluster's, its route's, its virtual
// host's, its route configuration's (nil: none at that level). Each
// level removes, then adds; a later (less specific) level wins on
// conflicts, as Envoy's finalizeRequestHeaders and
// finalizeResponseHeaders order them unless
// most_specific_header_mutations_wins.
type Levels [4]*HeaderOps

// Request applies the request header mutations to h (keys canonical).
func (l *Levels) Request(h http.Header) {
	for _, ops := range l {
		if ops == nil {
			continue
		}
		for _, k := range ops.RequestRemove {
			delete(h, k)
		}
		for i := range ops.RequestAdd {
			ops.RequestAdd[i].Apply(h)
		}
	}
}

// Response applies the response header mutations to h (keys canonical).
func (l *Levels) Response(h http.Header) {
	for _, ops := range l {
		if ops == nil {
			continue
		}
		for _, k := range ops.ResponseRemove {
			delete(h, k)
		}
		for i := range ops.ResponseAdd {
			ops.ResponseAdd[i].Apply(h)
		}
	}
}

// RequestNames calls yield with each header name the request mutations
// remove or add (canonical; a name more than once when several
// mutations name it), until yield returns false: the headers whose
// values Request may change, and the only ones.
func (l *Levels) RequestNames(yield func(string) bool) {
	for _, ops := range l {
		if ops == nil {
			continue
		}
		for _, k := range ops.RequestRemove {
			if !yield(k) {
				return
			}
		}
		for i := range ops.RequestAdd {
			if !yield(ops.RequestAdd[i].Key) {
				return
			}
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
	for i, k := range reqRemove {
		if !modifiable(k) {
			return o, fmt.Errorf("%s: pseudo-header or host %s cannot be removed", strict.Join(path, "request_headers_to_remove", i), k)
		}
		o.RequestRemove = append(o.RequestRemove, http.CanonicalHeaderKey(k))
	}
	for i, k := range respRemove {
		if !modifiable(k) {
			return o, fmt.Errorf("%s: pseudo-header or host %s cannot be removed", strict.Join(path, "response_headers_to_remove", i), k)
		}
		o.ResponseRemove = append(o.ResponseRemove, http.CanonicalHeaderKey(k))
	}
	return o, nil
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
		k := h.GetHeader().GetKey()
		v := h.GetHeader().GetValue()
		if v == "" {
			v = string(h.GetHeader().GetRawValue())
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
