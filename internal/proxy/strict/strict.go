// Package strict checks that an Envoy message sets only the fields weft proxy
// implements, so that configuration is either honoured or rejected (NACKed),
// never silently ignored.
//
// Each builder in the proxy lists, per message, the fields it reads and the
// fields it tolerates because they have no behaviour in weft proxy (stat
// names, metadata, tracing: {} and the like). Any other populated field makes
// Fields return an error that names it, and the update is NACKed with it.
package strict

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// UnsupportedError names a populated field weft proxy does not implement.
type UnsupportedError struct {
	Path  string // where the message sits, e.g. "listener lds_egress.filter_chains[0]"
	Field string // proto field name, e.g. "transport_socket"
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s: field %s is not supported by weft proxy", e.Path, e.Field)
}

// Fields returns an *UnsupportedError for the first populated field of m
// (in field-number order) whose proto name is not in allowed. A nil m is
// accepted.
func Fields(m proto.Message, path string, allowed ...string) error {
	if m == nil {
		return nil
	}
	r := m.ProtoReflect()
	if !r.IsValid() {
		return nil
	}
	var bad protoreflect.FieldDescriptor
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !r.Has(fd) || contains(allowed, string(fd.Name())) {
			continue
		}
		bad = fd
		break
	}
	if bad == nil {
		return nil
	}
	return &UnsupportedError{Path: path, Field: string(bad.Name())}
}

// Value returns an error naming field when a field that weft proxy accepts
// only with certain values holds another one.
func Value(path, field string, v any, why string) error {
	return fmt.Errorf("%s: %s = %v is not supported by weft proxy: %s", path, field, v, why)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Join builds a child path: Join("cluster x", "health_checks", 0) is
// "cluster x.health_checks[0]".
func Join(path, field string, index ...int) string {
	var b strings.Builder
	b.WriteString(path)
	b.WriteByte('.')
	b.WriteString(field)
	for _, i := range index {
		fmt.Fprintf(&b, "[%d]", i)
	}
	return b.String()
}
