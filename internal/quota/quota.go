// Package quota reads and writes named resource quotas in the form weft
// server's quota flags take (--appmesh-limits, --cloudmap-limits):
// "name=value,...", names matched without regard to case. Each API
// package owns its quotas, their names and defaults; this package owns
// only the syntax, so that both flags read alike.
package quota

import (
	"fmt"
	"strconv"
	"strings"
)

// Field is one named quota and the variable that holds its value.
type Field struct {
	Name  string
	Value *int
}

// Format writes fields as "name=value,..." in their order: what Parse
// reads back.
func Format(fields []Field) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.Name + "=" + strconv.Itoa(*f.Value)
	}
	return strings.Join(parts, ",")
}

// Parse sets the fields that s names; the others keep their values, so
// a flag can change one quota and keep the defaults of the rest. Empty
// items are skipped. On error some fields may have been set: callers
// parse into a copy and keep the original on error.
func Parse(s string, fields []Field) error {
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("limit %q: want name=value", item)
		}
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("limit %q: %w", item, err)
		}
		name = strings.TrimSpace(name)
		found := false
		for _, f := range fields {
			if strings.EqualFold(f.Name, name) {
				*f.Value, found = n, true
			}
		}
		if !found {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.Name
			}
			return fmt.Errorf("unknown limit %q (known: %s)", name, strings.Join(names, ", "))
		}
	}
	return nil
}
