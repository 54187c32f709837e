package cloudmap

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/pagetoken"
	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/store"
)

// Registry is the Cloud Map service on a store: each exported method is
// one API operation, taking its input as a Valid (Decode makes it of a
// request, Check of a Go caller's input) and returning the model's types.
// Every mutation is one store transaction, durable when the method
// returns, so the operations AWS runs asynchronously are complete
// (SUCCESS) at once.
//
// Errors a method returns are *Error (an AWS error for the caller),
// ErrNotValidated (the zero Valid: a bug in the caller) or store errors
// (the request could not be served).
type Registry struct {
	st        store.Store
	region    string
	account   string
	now       func() time.Time
	rand      io.Reader
	retention time.Duration
	limits    Limits
	log       *slog.Logger
	skipped   prometheus.Counter // nil: not counted

	idMu   sync.Mutex // guards the two below
	idLast uint64     // the millisecond of the last sortable id
	idSeq  uint64     // ids made in it before the next
}

// Config configures a Registry. Zero fields take the defaults given.
type Config struct {
	Region    string           // region in ARNs; "us-east-1"
	AccountID string           // the account that owns everything; "111122223333"
	Now       func() time.Time // time.Now
	Rand      io.Reader        // source of ids; crypto/rand
	// Retention is how long operations (GetOperation) and request ids
	// (CreatorRequestId idempotency) are kept; 24 hours.
	Retention time.Duration
	// Limits are the quotas, each field as given (zero or less: no
	// limit); nil: DefaultLimits().
	Limits *Limits
	// Log hears of records a listing leaves out (nil: none is told), and
	// Skipped counts them (nil: not counted).
	Log     *slog.Logger
	Skipped prometheus.Counter
}

// NewRegistry returns the registry on st.
func NewRegistry(st store.Store, cfg Config) *Registry {
	r := &Registry{st: st, region: cfg.Region, account: cfg.AccountID, now: cfg.Now, rand: cfg.Rand, retention: cfg.Retention, limits: DefaultLimits(), log: cfg.Log, skipped: cfg.Skipped}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.region == "" {
		r.region = "us-east-1"
	}
	if r.account == "" {
		r.account = "111122223333"
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.rand == nil {
		r.rand = rand.Reader
	}
	if r.retention <= 0 {
		r.retention = 24 * time.Hour
	}
	if cfg.Limits != nil {
		r.limits = *cfg.Limits
	}
	return r
}

// skip logs and counts a record a read left out.
func (r *Registry) skip(err error) {
	if r.skipped != nil {
		r.skipped.Inc()
	}
	r.log.Error("skipping undecodable record", "error", err)
}

// --- ids and ARNs

const (
	lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	// base32hex keeps the order of the numbers it encodes.
	sortable = "0123456789abcdefghijklmnopqrstuv"
)

func (r *Registry) randomString(alphabet string, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r.rand, b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

// sortableID returns an id that sorts by time: ten characters of the
// millisecond clock, then random ones, shaped like AWS operation ids
// (32 characters, a dash, 8 more). Ids this registry makes sort in the
// order they were made, also within one millisecond (the first four
// characters after the clock count them) and if the clock steps back.
func (r *Registry) sortableID(now time.Time) (string, error) {
	const seqChars = 4 // 20 bits: ids per millisecond before the next is borrowed
	ms := uint64(now.UnixMilli())
	r.idMu.Lock()
	switch {
	case ms > r.idLast:
		r.idLast, r.idSeq = ms, 0
	case r.idSeq+1 < 1<<(5*seqChars):
		r.idSeq++
	default:
		r.idLast, r.idSeq = r.idLast+1, 0
	}
	ms, seq := r.idLast, r.idSeq
	r.idMu.Unlock()
	var head [10 + seqChars]byte
	for i := seqChars - 1; i >= 0; i-- {
		head[10+i] = sortable[seq&31]
		seq >>= 5
	}
	for i := 9; i >= 0; i-- {
		head[i] = sortable[ms&31]
		ms >>= 5
	}
	tail, err := r.randomString(sortable, 30-seqChars)
	if err != nil {
		return "", err
	}
	id := string(head[:]) + tail
	return id[:32] + "-" + id[32:], nil
}

// sortableTime is the time a sortableID was made at.
func sortableTime(id string) (time.Time, bool) {
	if len(id) < 10 {
		return time.Time{}, false
	}
	var ms uint64
	for _, c := range []byte(id[:10]) {
		i := strings.IndexByte(sortable, c)
		if i < 0 {
			return time.Time{}, false
		}
		ms = ms<<5 | uint64(i)
	}
	return time.UnixMilli(int64(ms)), true
}

func (r *Registry) arn(kind, id string) string {
	return "arn:aws:servicediscovery:" + r.region + ":" + r.account + ":" + kind + "/" + id
}

// resourceID returns the id in an id-or-ARN argument. An ARN of another
// region, account or kind names nothing here: ok is false.
func (r *Registry) resourceID(idOrARN, kind string) (string, bool) {
	if !strings.HasPrefix(idOrARN, "arn:") {
		return idOrARN, idOrARN != ""
	}
	parts := strings.SplitN(idOrARN, ":", 6)
	if len(parts) != 6 || parts[2] != "servicediscovery" || parts[3] != r.region || parts[4] != r.account {
		return "", false
	}
	id, ok := strings.CutPrefix(parts[5], kind+"/")
	return id, ok && id != ""
}

// --- transactions

// update runs fn in one store transaction; an *Error from fn is returned
// as is and writes nothing.
func (r *Registry) update(ctx context.Context, fn func(tx store.Tx) error) error {
	_, err := r.st.Update(ctx, fn)
	return err
}

func (r *Registry) view(ctx context.Context, fn func(tx store.Tx) error) error {
	_, err := r.st.View(ctx, fn)
	return err
}

func getJSON(tx store.Tx, key string, v any) (bool, error) {
	kv, ok, err := tx.Get(key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

func putJSON(tx store.Tx, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return tx.Put(key, b)
}

func (r *Registry) getNamespace(tx store.Tx, idOrARN string) (*NamespaceRecord, error) {
	id, ok := r.resourceID(idOrARN, "namespace")
	var rec NamespaceRecord
	if ok {
		found, err := getJSON(tx, NamespaceKey(id), &rec)
		if err != nil {
			return nil, err
		}
		ok = found
	}
	if !ok {
		return nil, errorf(CodeNamespaceNotFound, "Namespace not found: %s", idOrARN)
	}
	return &rec, nil
}

func (r *Registry) getService(tx store.Tx, idOrARN string) (*ServiceRecord, error) {
	id, ok := r.resourceID(idOrARN, "service")
	var rec ServiceRecord
	if ok {
		found, err := getJSON(tx, ServiceKey(id), &rec)
		if err != nil {
			return nil, err
		}
		ok = found
	}
	if !ok {
		return nil, errorf(CodeServiceNotFound, "Service not found: %s", idOrARN)
	}
	return &rec, nil
}

// --- idempotency

// TokenRecord remembers the outcome of a request that carried a request id
// (CreatorRequestId, UpdaterRequestId).
type TokenRecord struct {
	At          int64           `json:"At"`   // when the request was served, Unix milliseconds
	Hash        string          `json:"Hash"` // of the request without its id
	OperationId string          `json:"OperationId,omitzero"`
	Result      json.RawMessage `json:"Result"`
}

// expiryPrefix orders request ids by age, for pruning:
// cloudmap/tokenexp/<sortable id> -> the token's key.
const expiryPrefix = KeyPrefix + "tokenexp/"

// stamp is what one mutation needs decided before its transaction, since
// the store may run the transaction more than once.
type stamp struct {
	now      time.Time
	opID     string // for mutations that report an operation
	expiryID string // for request ids
}

func (r *Registry) newStamp() (stamp, error) {
	now := r.now()
	op, err := r.sortableID(now)
	if err != nil {
		return stamp{}, err
	}
	exp, err := r.sortableID(now)
	if err != nil {
		return stamp{}, err
	}
	return stamp{now: now, opID: op, expiryID: exp}, nil
}

// requestHash identifies a request apart from its request id; req must be
// a copy with the id cleared.
func requestHash(req any) (string, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("encode request: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// idempotent runs do in a transaction once per (operation, request id): a
// repeat of the same request returns the first result and writes nothing,
// another request with the same id fails with DuplicateRequest. An empty
// id runs do every time. opID is the operation the result reports, if any.
func idempotent[Resp any](ctx context.Context, r *Registry, st stamp, op, requestID, hash, opID string, do func(tx store.Tx) (*Resp, error)) (*Resp, error) {
	var out *Resp
	err := r.update(ctx, func(tx store.Tx) error {
		out = nil
		if err := r.prune(tx, st.now); err != nil {
			return err
		}
		key := tokenKey(op, requestID)
		if requestID != "" {
			var tok TokenRecord
			found, err := getJSON(tx, key, &tok)
			if err != nil {
				return err
			}
			// A request id older than the retention is forgotten, even if
			// pruning has not reached it yet.
			if found && st.now.Sub(time.UnixMilli(tok.At)) <= r.retention {
				if tok.Hash != hash {
					e := errorf(CodeDuplicateRequest, "The request %s was already used for a different %s request", requestID, op)
					if tok.OperationId != "" {
						e.Fields = map[string]string{"DuplicateOperationId": tok.OperationId}
					}
					return e
				}
				var resp Resp
				if err := json.Unmarshal(tok.Result, &resp); err != nil {
					return fmt.Errorf("decode %s: %w", key, err)
				}
				out = &resp
				return nil
			}
		}
		resp, err := do(tx)
		if err != nil {
			return err
		}
		if requestID != "" {
			result, err := json.Marshal(resp)
			if err != nil {
				return fmt.Errorf("encode result: %w", err)
			}
			if err := putJSON(tx, key, TokenRecord{At: st.now.UnixMilli(), Hash: hash, OperationId: opID, Result: result}); err != nil {
				return err
			}
			if err := tx.Put(expiryPrefix+st.expiryID, []byte(key)); err != nil {
				return err
			}
		}
		out = resp
		return nil
	})
	return out, err
}

// pruneBatch bounds the work one write does to forget old operations and
// request ids; as each write adds at most one of each, it keeps up.
const pruneBatch = 4

// prune deletes operations and request ids older than the retention.
func (r *Registry) prune(tx store.Tx, now time.Time) error {
	cutoff := now.Add(-r.retention)
	for _, prefix := range []string{OperationPrefix, expiryPrefix} {
		kvs, err := tx.List(prefix, "", pruneBatch)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			t, ok := sortableTime(strings.TrimPrefix(kv.Key, prefix))
			if ok && !t.Before(cutoff) {
				break
			}
			if prefix == expiryPrefix {
				// The request id may have been used again since: delete
				// only the record this entry was made for.
				var tok TokenRecord
				found, err := getJSON(tx, string(kv.Value), &tok)
				if err != nil {
					return err
				}
				if found && time.UnixMilli(tok.At).Before(cutoff) {
					if err := tx.Delete(string(kv.Value)); err != nil {
						return err
					}
				}
			}
			if err := tx.Delete(kv.Key); err != nil {
				return err
			}
		}
	}
	return nil
}

// --- operations

// recordOp stores a completed operation and returns its id.
func (r *Registry) recordOp(tx store.Tx, st stamp, typ OperationType, targets map[string]string) (*string, error) {
	t := shape.NewTime(st.now)
	op := Operation{
		Id:         ptr(st.opID),
		Type:       typ,
		Status:     OperationStatusSuccess,
		CreateDate: t,
		UpdateDate: t,
		Targets:    targets,
	}
	if err := putJSON(tx, OperationKey(st.opID), op); err != nil {
		return nil, err
	}
	if err := r.prune(tx, st.now); err != nil {
		return nil, err
	}
	return ptr(st.opID), nil
}

// --- small helpers

func ptr[T any](v T) *T { return &v }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// AsError returns err as an *Error when it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// --- listing

// errSkip marks a listed record that does not decode: a listing leaves
// it out rather than fail. The registry writes none; a hand-edited
// store may hold one, and it must not fail every listing that reaches
// it.
var errSkip = errors.New("not listed")

// unmarshal decodes a listed record; an error wraps errSkip.
func unmarshal(kv store.KV, v any) error {
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return fmt.Errorf("%w: decode %s: %v", errSkip, kv.Key, err)
	}
	return nil
}

// maxResults is a validated MaxResults (at least 1, by the model), or
// def when there is none.
func maxResults(p *int64, def int) int {
	if p == nil {
		return def
	}
	return int(*p)
}

// listBatch is how many keys a listing reads from the store at a time.
const listBatch = 256

// page walks the keys under prefix that sort after the position token (a
// NextToken that page returned for the same prefix, "" for the start)
// and passes each to take until take has accepted max of them. It returns
// the NextToken of the following page, or nil when no key follows; a
// token it did not make for this prefix is InvalidInput. A key take
// fails with errSkip is logged and left out.
func (r *Registry) page(tx store.Tx, prefix, token string, max int, take func(kv store.KV) (bool, error)) (*string, error) {
	after := ""
	if token != "" {
		var ok bool
		if after, ok = pagetoken.After(prefix, token); !ok {
			return nil, invalid("The NextToken %q is not valid: pass the NextToken of the previous page of the same listing", token)
		}
	}
	taken := 0
	for {
		kvs, err := tx.List(prefix, after, listBatch)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			if taken == max {
				return ptr(pagetoken.Make(prefix, after)), nil
			}
			ok, err := take(kv)
			if errors.Is(err, errSkip) {
				r.skip(err)
			} else if err != nil {
				return nil, err
			}
			if ok {
				taken++
			}
			after = kv.Key
		}
		if len(kvs) < listBatch {
			return nil, nil
		}
	}
}
