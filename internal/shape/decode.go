package shape

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
)

// DecodeObject reads a request body that must be exactly one JSON object,
// numbers kept as json.Number so that Validate sees them as written.
func DecodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, errors.New("the request body is not valid JSON: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("the request body has data after its JSON object")
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New("the request body must be a JSON object")
	}
	return obj, nil
}

// StructureOf returns the name of the structure of m whose Go type t is:
// the generated types of package pkg are named after their shapes. Any
// other type has no shape to be validated against, and ok is false.
func (m *Model) StructureOf(t reflect.Type, pkg string) (name string, ok bool) {
	if t.PkgPath() != pkg {
		return "", false
	}
	if s := m.Shapes[t.Name()]; s != nil && s.Kind == Structure {
		return t.Name(), true
	}
	return "", false
}
