package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/shape"
)

// CheckRecord checks one key under appmesh.KeyPrefix and its value as a
// restore must before writing them (weft restore, weft store copy): a
// resource (appmesh.CheckData) or a bookkeeping record of
// bookkeeping.go, under the key the operations would write it at. Any
// other key is one the operations never write. It reads nothing else,
// so records that name others (tags, the in-use index) are not checked
// against them.
func CheckRecord(key string, value []byte) error {
	if r, ok := appmesh.ParseKey(key); ok {
		if r.Key() != key {
			return fmt.Errorf("not the key of %s %s (%s)", r.Kind, r.Name, r.Key())
		}
		return appmesh.CheckData(r, value)
	}
	switch {
	case strings.HasPrefix(key, tagsPrefix):
		r, ok := appmesh.ParseKey(appmesh.KeyPrefix + strings.TrimPrefix(key, tagsPrefix))
		if !ok || tagsKey(r) != key {
			return errors.New("not the tags key of a resource")
		}
		var tags []appmesh.TagRef
		if err := appmesh.Model().DecodeStored("TagList", value, &tags); err != nil {
			return fmt.Errorf("not a tag list: %w", err)
		}
		if len(tags) == 0 {
			return errors.New("no tags (a resource without tags has no tags key)")
		}
		return nil
	case strings.HasPrefix(key, refsPrefix):
		if _, _, ok := parseRefKey(key); !ok {
			return errors.New("not an in-use index key")
		}
		return mustBeEmpty(value)
	case strings.HasPrefix(key, tokenPrefix):
		parts, ok := segments(strings.TrimPrefix(key, tokenPrefix), 2)
		if !ok || tokenKey(parts[0], parts[1]) != key {
			return errors.New("not a client token key")
		}
		var rec tokenRecord
		if err := shape.DecodeStrict(value, &rec); err != nil {
			return fmt.Errorf("not a client token record: %w", err)
		}
		if rec.Hash == "" || rec.Expires <= 0 || !json.Valid(rec.Result) {
			return errors.New("not a client token record: hash, expiry or result missing")
		}
		return nil
	case strings.HasPrefix(key, tokenExpPrefix):
		parts, ok := segments(strings.TrimPrefix(key, tokenExpPrefix), 3)
		if !ok {
			return errors.New("not a client token expiry key")
		}
		exp, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || exp <= 0 || tokenExpKey(exp, parts[1], parts[2]) != key {
			return errors.New("not a client token expiry key")
		}
		return mustBeEmpty(value)
	}
	return errors.New("not a key weft's App Mesh writes")
}

// parseRefKey returns the reference an in-use index key stands for, if
// it is one refKey writes.
func parseRefKey(key string) (from, to appmesh.Ref, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(key, refsPrefix), "/", 5)
	if len(parts) != 5 {
		return from, to, false
	}
	head, ok := segments(strings.Join(parts[:4], "/"), 4)
	if !ok {
		return from, to, false
	}
	to = appmesh.Ref{Owner: head[0], Mesh: head[1], Kind: appmesh.Kind(head[2]), Name: head[3]}
	switch to.Kind {
	case appmesh.KindVirtualNode, appmesh.KindVirtualRouter, appmesh.KindVirtualService: // what the kinds' refs name
	default:
		return from, to, false
	}
	from, ok = appmesh.ParseKey(appmesh.MeshChildrenPrefix(to.Owner, to.Mesh) + parts[4])
	if !ok || refKey(from, to) != key {
		return from, to, false
	}
	return from, to, true
}

// segments splits s into n path-escaped segments and unescapes them.
func segments(s string, n int) ([]string, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != n {
		return nil, false
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}

func mustBeEmpty(value []byte) error {
	if len(value) != 0 {
		return fmt.Errorf("holds %d bytes; an index key holds none", len(value))
	}
	return nil
}
