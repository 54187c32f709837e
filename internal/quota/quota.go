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

	"github.com/weftmesh/weft/internal/store"
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

// ParseOver returns base with the quotas s names set (Parse) through
// fields, or base and the error: a flag can change one quota and keep
// the defaults of the rest.
func ParseOver[L any](s string, base L, fields func(*L) []Field) (L, error) {
	out := base
	if err := Parse(s, fields(&out)); err != nil {
		return base, err
	}
	return out, nil
}

// ExactMax is the largest quota counted exactly on etcd (Reader). It is
// well under the compares an etcd commit makes before it compares the
// store's sequence key instead (etcd.DefaultMaxCompares, 100), with room
// for a write's other reads.
const ExactMax = 20

// Reader returns what a quota of max is counted through in tx. Up to
// ExactMax, tx itself: the count is guarded, concurrent creates in its
// scope conflict and run again on a snapshot that has the others', and
// the quota is exact. Above it, tx.Unguarded(): a guarded count of a
// large scope made a create depend on every resource in it (conflicting
// with every change to any of them), and past about 100 keys its commit
// compared the sequence key and conflicted with any write at all. So a
// larger quota is a bound on etcd: creates in one scope in flight at once
// (snapshot to commit, on any replica) each count without the others,
// and may pass it together by at most their number less one. On bolt,
// writes run one at a time and every count is exact.
func Reader(tx store.Tx, max int) store.Reader {
	if max > ExactMax {
		return tx.Unguarded()
	}
	return tx
}
