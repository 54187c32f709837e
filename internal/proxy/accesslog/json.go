package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"
)

// JSON is a compiled JSON format: each key maps to a literal, a nested
// format, or a text format. A value that is exactly one operator keeps its
// type (numbers stay numbers, unavailable becomes null), as in Envoy.
type JSON struct {
	keys      []string
	vals      []jsonValue
	omitEmpty bool
}

type jsonValue struct {
	lit    any   // literal number, bool or nil
	nested *JSON // nested object
	single *Text // exactly one operator
	text   *Text // anything else: a string
}

// CompileJSON compiles a json_format struct.
func CompileJSON(s *structpb.Struct, omitEmpty bool) (*JSON, error) {
	j := &JSON{omitEmpty: omitEmpty}
	for k := range s.GetFields() {
		j.keys = append(j.keys, k)
	}
	sort.Strings(j.keys)
	for _, k := range j.keys {
		v := s.GetFields()[k]
		var jv jsonValue
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			t, err := CompileText(x.StringValue, false)
			if err != nil {
				return nil, fmt.Errorf("json_format key %q: %w", k, err)
			}
			if len(t.segs) == 1 && t.segs[0].op != nil {
				jv.single = t
			} else {
				jv.text = t
			}
		case *structpb.Value_StructValue:
			n, err := CompileJSON(x.StructValue, omitEmpty)
			if err != nil {
				return nil, fmt.Errorf("json_format key %q: %w", k, err)
			}
			jv.nested = n
		case *structpb.Value_NumberValue:
			jv.lit = x.NumberValue
		case *structpb.Value_BoolValue:
			jv.lit = x.BoolValue
		case *structpb.Value_NullValue:
			jv.lit = nil
		default:
			return nil, fmt.Errorf("json_format key %q: lists are not supported by weft proxy", k)
		}
		j.vals = append(j.vals, jv)
	}
	return j, nil
}

// Append formats e as one JSON object and a newline onto b.
func (j *JSON) Append(b []byte, e *Entry) []byte {
	b = j.appendObject(b, e)
	return append(b, '\n')
}

func (j *JSON) appendObject(b []byte, e *Entry) []byte {
	b = append(b, '{')
	first := true
	for i, k := range j.keys {
		jv := j.vals[i]
		var val []byte
		switch {
		case jv.nested != nil:
			val = jv.nested.appendObject(nil, e)
		case jv.single != nil:
			seg := jv.single.segs[0]
			v := seg.op(e)
			switch {
			case !v.ok:
				if j.omitEmpty {
					continue
				}
				val = []byte("null")
			case v.num && seg.max == 0:
				val = strconv.AppendInt(nil, v.n, 10)
			default:
				s := v.text()
				if seg.max > 0 && len(s) > seg.max {
					s = s[:seg.max]
				}
				val = appendJSONString(nil, s)
			}
		case jv.text != nil:
			val = appendJSONString(nil, string(jv.text.Append(nil, e)))
		default:
			val, _ = json.Marshal(jv.lit)
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = append(b, val...)
	}
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimRight(buf.Bytes(), "\n")...)
}
