package ops

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// Bookkeeping keys live under appmesh/ beside the resources, in prefixes
// that appmesh.ParseKey rejects, so the xDS server's watch ignores them:
//
//	appmesh/tags/<resource key without "appmesh/">                  []TagRef
//	appmesh/refs/<owner>/<mesh>/<toKind>/<to>/<from key in mesh>     "" (in-use index)
//	appmesh/token/<account>/<clientToken>                            tokenRecord
//	appmesh/tokenexp/<expiry, unix ns, 20 digits>/<account>/<token>  "" (expiry order)
const (
	tagsPrefix     = appmesh.KeyPrefix + "tags/"
	refsPrefix     = appmesh.KeyPrefix + "refs/"
	tokenPrefix    = appmesh.KeyPrefix + "token/"
	tokenExpPrefix = appmesh.KeyPrefix + "tokenexp/"
)

func esc(s string) string { return url.PathEscape(s) }

// --- tags

func tagsKey(r appmesh.Ref) string {
	return tagsPrefix + strings.TrimPrefix(r.Key(), appmesh.KeyPrefix)
}

func getTags(tx store.Tx, r appmesh.Ref) ([]appmesh.TagRef, error) {
	kv, ok, err := tx.Get(tagsKey(r))
	if err != nil || !ok {
		return nil, err
	}
	tags, err := decodeTags(kv.Value)
	if err != nil {
		return nil, fmt.Errorf("decode tags of %s: %w", r.Key(), err)
	}
	return tags, nil
}

// decodeTags decodes a tags record as getTags reads it.
func decodeTags(value []byte) ([]appmesh.TagRef, error) {
	var tags []appmesh.TagRef
	if err := json.Unmarshal(value, &tags); err != nil {
		return nil, err
	}
	return tags, nil
}

// mergeTags adds tags to have, replacing the value of a key already there
// and keeping the first position of each key. A stored tag may lack its
// key (the operations write none such, a restore does not refuse one).
func mergeTags(have, add []appmesh.TagRef) []appmesh.TagRef {
	out := append([]appmesh.TagRef(nil), have...)
	for _, t := range add {
		replaced := false
		for i := range out {
			if out[i].Key != nil && t.Key != nil && *out[i].Key == *t.Key {
				out[i].Value, replaced = t.Value, true
				break
			}
		}
		if !replaced {
			out = append(out, t)
		}
	}
	return out
}

func putTags(tx store.Tx, r appmesh.Ref, tags []appmesh.TagRef) error {
	if len(tags) == 0 {
		return tx.Delete(tagsKey(r))
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return err
	}
	return tx.Put(tagsKey(r), b)
}

// --- the in-use index: one key per reference that blocks a delete

func refsTo(to appmesh.Ref) string {
	return refsPrefix + esc(to.Owner) + "/" + esc(to.Mesh) + "/" + string(to.Kind) + "/" + esc(to.Name) + "/"
}

func refKey(from, to appmesh.Ref) string {
	return refsTo(to) + strings.TrimPrefix(from.Key(), appmesh.MeshChildrenPrefix(from.Owner, from.Mesh))
}

// setRefs replaces the references from one resource: old ones are removed,
// new ones added.
func setRefs(tx store.Tx, from appmesh.Ref, old, new []appmesh.Ref) error {
	for _, to := range old {
		if err := tx.Delete(refKey(from, to)); err != nil {
			return err
		}
	}
	for _, to := range new {
		if err := tx.Put(refKey(from, to), nil); err != nil {
			return err
		}
	}
	return nil
}

// referrers returns up to limit resources that refer to r.
func referrers(tx store.Tx, to appmesh.Ref, limit int) ([]appmesh.Ref, error) {
	prefix := refsTo(to)
	kvs, err := tx.List(prefix, "", limit)
	if err != nil {
		return nil, err
	}
	var out []appmesh.Ref
	for _, kv := range kvs {
		key := appmesh.MeshChildrenPrefix(to.Owner, to.Mesh) + strings.TrimPrefix(kv.Key, prefix)
		if r, ok := appmesh.ParseKey(key); ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// --- client tokens

// tokenRecord is what a client token remembers: the request it came with
// and the response body the first call returned.
type tokenRecord struct {
	Hash    string          `json:"hash"`
	Expires int64           `json:"expires"` // unix ns
	Result  json.RawMessage `json:"result"`
}

// decodeToken decodes a client token record as replay reads it.
func decodeToken(value []byte) (*tokenRecord, error) {
	var rec tokenRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

func tokenKey(account, token string) string {
	return tokenPrefix + esc(account) + "/" + esc(token)
}

func tokenExpKey(expires int64, account, token string) string {
	return tokenExpPrefix + fmt.Sprintf("%020d", expires) + "/" + esc(account) + "/" + esc(token)
}

// replay returns the result of an earlier request with the same token, or
// nil when there was none. The same token with a different request is a
// ConflictException.
func replay(tx store.Tx, c Caller, req request) (json.RawMessage, error) {
	if req.token == "" {
		return nil, nil
	}
	kv, ok, err := tx.Get(tokenKey(c.Account, req.token))
	if err != nil || !ok {
		return nil, err
	}
	rec, err := decodeToken(kv.Value)
	if err != nil {
		return nil, fmt.Errorf("decode client token record: %w", err)
	}
	if rec.Expires <= req.now.UnixNano() {
		return nil, nil
	}
	if rec.Hash != req.hash {
		return nil, appmesh.Conflict("The clientToken %s was already used with a different request", req.token)
	}
	return rec.Result, nil
}

// expiredPerWrite bounds the expired tokens one write removes, so that the
// cost of forgetting tokens is spread over the writes that make them.
const expiredPerWrite = 4

// remember stores the result of a request made with a token, and forgets a
// few expired ones.
func remember(tx store.Tx, c Caller, req request, ttl time.Duration, result []byte) error {
	if req.token == "" {
		return nil
	}
	exp := req.now.Add(ttl).UnixNano()
	b, err := json.Marshal(tokenRecord{Hash: req.hash, Expires: exp, Result: result})
	if err != nil {
		return err
	}
	if err := tx.Put(tokenKey(c.Account, req.token), b); err != nil {
		return err
	}
	if err := tx.Put(tokenExpKey(exp, c.Account, req.token), nil); err != nil {
		return err
	}
	olds, err := tx.List(tokenExpPrefix, "", expiredPerWrite)
	if err != nil {
		return err
	}
	for _, kv := range olds {
		rest := strings.TrimPrefix(kv.Key, tokenExpPrefix)
		ts, tail, _ := strings.Cut(rest, "/")
		when, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || when > req.now.UnixNano() {
			break
		}
		if err := tx.Delete(kv.Key); err != nil {
			return err
		}
		// The token may have been used again since; delete its record only
		// if it is the one this entry was written for.
		tk := tokenPrefix + tail
		cur, ok, err := tx.Get(tk)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if rec, err := decodeToken(cur.Value); err == nil && rec.Expires == when {
			if err := tx.Delete(tk); err != nil {
				return err
			}
		}
	}
	return nil
}
