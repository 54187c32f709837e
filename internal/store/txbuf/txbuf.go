// Package txbuf holds a write transaction's pending writes for the stores
// (bbolt and etcd): a transaction's reads see its own writes over what is
// stored, and nothing reaches the store until the transaction commits.
// The rules of that overlay (a deleted key is absent, a put shadows the
// stored value but keeps its create revision, a page is filled after
// shadowing) live here once.
package txbuf

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/weftmesh/weft/internal/store"
)

// Stored reads a key as the store holds it, without the pending writes.
type Stored func(key string) (store.KV, bool, error)

// Buffer is one transaction's pending writes. The zero value is not
// usable; New makes one.
type Buffer struct {
	readOnly bool
	writes   map[string]write
}

type write struct {
	value   []byte
	deleted bool
}

// New is an empty buffer; a read-only one refuses writes with
// store.ErrReadOnly.
func New(readOnly bool) *Buffer {
	if readOnly {
		return &Buffer{readOnly: true} // reads of a nil map see nothing written
	}
	return &Buffer{writes: map[string]write{}}
}

// Len is the number of keys written.
func (b *Buffer) Len() int { return len(b.writes) }

// Shadows reports whether key was written (put or deleted), so that its
// stored value is not what the transaction sees.
func (b *Buffer) Shadows(key string) bool {
	_, ok := b.writes[key]
	return ok
}

// Get is key as the transaction sees it: a pending delete hides it, a
// pending put gives its value with the stored revisions (none for a key
// the store does not hold yet).
func (b *Buffer) Get(key string, stored Stored) (store.KV, bool, error) {
	w, ok := b.writes[key]
	if !ok {
		return stored(key)
	}
	if w.deleted {
		return store.KV{}, false, nil
	}
	kv, ok, err := stored(key)
	if err != nil {
		return store.KV{}, false, err
	}
	if !ok {
		kv = store.KV{Key: key}
	}
	kv.Value = w.value
	return kv, true, nil
}

// Extra is how many more stored keys a List must read than its limit, so
// that the page is still full after the written keys are taken out.
func (b *Buffer) Extra() int { return len(b.writes) }

// Merge completes a List page: page holds the stored keys under prefix
// after after (in order, the shadowed ones already left out); Merge adds
// the pending puts in that range, sorts, and cuts at limit (0: none).
func (b *Buffer) Merge(page []store.KV, prefix, after string, limit int, stored Stored) ([]store.KV, error) {
	for key, w := range b.writes {
		if w.deleted || !strings.HasPrefix(key, prefix) || key <= after {
			continue
		}
		kv, _, err := b.Get(key, stored)
		if err != nil {
			return nil, err
		}
		page = append(page, kv)
	}
	sort.Slice(page, func(i, j int) bool { return page[i].Key < page[j].Key })
	if limit > 0 && len(page) > limit {
		page = page[:limit]
	}
	return page, nil
}

// Puts is the number of pending puts under prefix: a Count adds it to the
// stored keys it did not find shadowed.
func (b *Buffer) Puts(prefix string) int {
	n := 0
	for key, w := range b.writes {
		if !w.deleted && strings.HasPrefix(key, prefix) {
			n++
		}
	}
	return n
}

// Touches reports whether a key under prefix was written (put or
// deleted): a count of the stored keys must then know which they are.
func (b *Buffer) Touches(prefix string) bool {
	for key := range b.writes {
		if strings.HasPrefix(key, prefix) {
			return true
		}
	}
	return false
}

// Put records a put of a copy of value.
func (b *Buffer) Put(key string, value []byte) error {
	if b.readOnly {
		return store.ErrReadOnly
	}
	if key == "" {
		return fmt.Errorf("store: empty key")
	}
	b.writes[key] = write{value: slices.Clone(value)}
	return nil
}

// Delete records a delete of key; for a key the store does not hold, it
// only forgets a pending put, so that nothing is recorded.
func (b *Buffer) Delete(key string, stored Stored) error {
	if b.readOnly {
		return store.ErrReadOnly
	}
	if _, ok, err := stored(key); err != nil {
		return err
	} else if !ok {
		delete(b.writes, key)
		return nil
	}
	b.writes[key] = write{deleted: true}
	return nil
}

// Each calls fn for every written key in key order, with its value
// (deleted: the key is to be removed), stopping at fn's first error.
func (b *Buffer) Each(fn func(key string, value []byte, deleted bool) error) error {
	keys := make([]string, 0, len(b.writes))
	for k := range b.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := b.writes[k]
		if err := fn(k, w.value, w.deleted); err != nil {
			return err
		}
	}
	return nil
}
