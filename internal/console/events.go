package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// Event stream limits' defaults.
const (
	// DefaultMaxSubscribers bounds the open GET /v1/events streams; one
	// more is answered 503 ServiceUnavailableException.
	DefaultMaxSubscribers = 64
	// DefaultEventWriteTimeout is how long one event may take to reach a
	// subscriber; a slower one is dropped (its browser reconnects).
	DefaultEventWriteTimeout = 10 * time.Second
	// DefaultProxiesInterval is how often the proxies' status is compared
	// with what a subscriber was last told; a change sends a "proxies"
	// event.
	DefaultProxiesInterval = 500 * time.Millisecond
	// DefaultKeepAlive is the interval of comment lines that keep idle
	// streams open through proxies.
	DefaultKeepAlive = 25 * time.Second
	// DefaultMaxStreamAge bounds one stream's life. The caller's
	// credentials are checked when it connects; ending the stream makes
	// the client connect again and be checked again, so a key removed
	// from the credentials file, a changed policy or an ended console
	// session stops receiving events within this time.
	DefaultMaxStreamAge = 15 * time.Minute
)

// Watcher is what the event stream needs from the store.
type Watcher interface {
	View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error)
	Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error)
}

// Event is one change of a mesh's resources, as GET /v1/events sends it.
type Event struct {
	Revision store.Revision `json:"revision"`
	Kind     appmesh.Kind   `json:"kind"`
	Mesh     string         `json:"mesh"`
	Parent   string         `json:"parent,omitempty"` // router of a route, gateway of a gateway route
	Name     string         `json:"name"`
	Op       string         `json:"op"` // put or delete
}

// EventsConfig configures Events; zero limits take the defaults.
type EventsConfig struct {
	Store Watcher
	// Account is the mesh owner a request's caller sees (the verified
	// key's account, else the server's).
	Account func(r *http.Request) string
	// ProxiesDigest summarises the proxies' status (nil: no proxies
	// events); a change of it is sent as a "proxies" event.
	ProxiesDigest func() string

	// Allowed returns, for a request, whether its caller may read a
	// resource, authorized exactly as the resource's Describe operation
	// would be for that caller (DescribeAction on its ARN); nil, or a nil
	// function, when every resource may be read (no credentials file). A
	// snapshot holds, and change events name, only such resources.
	Allowed func(r *http.Request) func(appmesh.Ref) bool
	// CredentialsChanged returns a channel closed when the credentials
	// in force change after the call (nil: they never do). A stream
	// then ends with "reconnect": its caller is authorized again when
	// it connects again, and one whose key was removed or narrowed
	// does not keep what it was allowed.
	CredentialsChanged func() <-chan struct{}

	// Stop, when closed, ends every stream (the server is shutting down:
	// a graceful shutdown waits for requests, and a stream never ends by
	// itself). Nil: streams end only with their request.
	Stop <-chan struct{}

	MaxSubscribers   int
	WriteTimeout     time.Duration
	ProxiesInterval  time.Duration
	KeepAlive        time.Duration
	MaxStreamAge     time.Duration
	MaxSnapshotBytes int // resources' JSON in one snapshot
	MaxSnapshots     int // snapshots being read or sent at once
	Log              *slog.Logger
}

// Events serves GET /v1/events?mesh=M[&after=R|&snapshot=true] as
// server-sent events: "hello" with the revision the stream starts after (R
// when given and the store still holds the history after it, else the
// current one); with snapshot=true, the mesh's resources at that revision
// (those the caller may read) in "snapshot" events of up to 250, then
// "snapshot-end" (complete false when the mesh had more than
// MaxSnapshotBytes, or MaxSnapshots were being sent already); one
// "change" per resource of the mesh that is written or deleted, "proxies"
// when the connected proxies' status changes, "resync" before the stream
// ends because the store dropped the watch (the client reloads and
// reconnects), and "reconnect" before it ends because it reached
// MaxStreamAge (the client connects again with after=, its credentials
// checked again).
type Events struct {
	cfg       EventsConfig
	open      atomic.Int64  // streams being served
	snapshots chan struct{} // one per snapshot being read or sent
}

// NewEvents returns the event stream handler.
func NewEvents(cfg EventsConfig) *Events {
	if cfg.MaxSubscribers <= 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultEventWriteTimeout
	}
	if cfg.ProxiesInterval <= 0 {
		cfg.ProxiesInterval = DefaultProxiesInterval
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.MaxStreamAge <= 0 {
		cfg.MaxStreamAge = DefaultMaxStreamAge
	}
	if cfg.MaxSnapshotBytes <= 0 {
		cfg.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	if cfg.MaxSnapshots <= 0 {
		cfg.MaxSnapshots = DefaultMaxSnapshots
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Events{cfg: cfg, snapshots: make(chan struct{}, cfg.MaxSnapshots)}
}

func restError(w http.ResponseWriter, status int, code, msg string) {
	writeErr(w, errSession(status, code, msg))
}

func (e *Events) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mesh := r.URL.Query().Get("mesh")
	if mesh == "" {
		restError(w, http.StatusBadRequest, "BadRequestException", "The mesh query parameter is required: /v1/events?mesh=NAME.")
		return
	}
	owner := e.cfg.Account(r)
	q := r.URL.Query()
	snapshot := q.Get("snapshot") == "true"
	if snapshot && q.Get("after") != "" {
		restError(w, http.StatusBadRequest, "BadRequestException", "snapshot and after cannot be given together: a snapshot starts the stream now.")
		return
	}
	var credsChanged <-chan struct{} // nil: never
	if e.cfg.CredentialsChanged != nil {
		credsChanged = e.cfg.CredentialsChanged()
	}
	var allowed func(appmesh.Ref) bool // nil: every resource
	if e.cfg.Allowed != nil {
		allowed = e.cfg.Allowed(r)
	}
	if n := e.open.Add(1); n > int64(e.cfg.MaxSubscribers) {
		e.open.Add(-1)
		restError(w, http.StatusServiceUnavailable, "ServiceUnavailableException", fmt.Sprintf("Too many event streams are open (at most %d).", e.cfg.MaxSubscribers))
		return
	}
	defer e.open.Add(-1)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var exists, complete bool
	var snap []Resource
	reading := false // holds a snapshot slot
	if snapshot {
		select {
		case e.snapshots <- struct{}{}:
			reading = true
			defer func() {
				if reading {
					<-e.snapshots
				}
			}()
		default: // too many at once: an empty, incomplete one
		}
	}
	rev, err := e.cfg.Store.View(ctx, func(tx store.Tx) error {
		_, ok, err := tx.Get(appmesh.MeshKey(owner, mesh))
		exists = ok
		if err != nil || !ok || !reading {
			return err
		}
		snap, complete, err = readSnapshot(tx, owner, mesh, allowed, e.cfg.MaxSnapshotBytes)
		return err
	})
	if err != nil {
		restError(w, http.StatusInternalServerError, "InternalServerErrorException", "The store could not be read.")
		return
	}
	if !exists {
		restError(w, http.StatusNotFound, "NotFoundException", "Mesh "+mesh+" does not exist.")
		return
	}
	from := rev
	if a := q.Get("after"); a != "" {
		n, perr := strconv.ParseInt(a, 10, 64)
		if perr != nil || n < 0 {
			restError(w, http.StatusBadRequest, "BadRequestException", "after must be a store revision (an integer from 0).")
			return
		}
		if store.Revision(n) <= rev { // later: another store (a backup restored); start now
			from = store.Revision(n)
		}
	}
	changes, err := e.cfg.Store.Watch(ctx, appmesh.KeyPrefix, from)
	if errors.Is(err, store.ErrCompacted) {
		// The history after from is gone: the stream starts now, and its
		// hello says so (the client reads the mesh again).
		from = rev
		changes, err = e.cfg.Store.Watch(ctx, appmesh.KeyPrefix, from)
	}
	if err != nil {
		restError(w, http.StatusServiceUnavailable, "ServiceUnavailableException", "The store cannot be watched now; retry.")
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{}) // the listener's read timeout must not end a long stream
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Add("Vary", "Accept-Encoding")
	// A stream that starts with a snapshot is gzipped when the client
	// takes gzip (a browser does): the snapshot is JSON of the whole mesh,
	// some 0.7 MB for 1,251 resources, and shrinks about tenfold. Each
	// event is compressed on its own (stateless: no compressor state is
	// kept between events, so a stream open for minutes holds no
	// compression memory) and is on the wire, decodable, once written.
	var out io.Writer = w
	if snapshot && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		zw, _ := gzip.NewWriterLevel(w, gzip.StatelessCompression) // a valid level: no error
		defer zw.Close()                                           // the gzip trailer, when the stream ends
		out = zw
	}
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) error {
		rc.SetWriteDeadline(time.Now().Add(e.cfg.WriteTimeout))
		var err error
		if v == nil {
			_, err = fmt.Fprintf(out, ": %s\n\n", event)
		} else {
			b, _ := json.Marshal(v)
			_, err = fmt.Fprintf(out, "event: %s\ndata: %s\n\n", event, b)
		}
		if err == nil {
			err = rc.Flush()
		}
		return err
	}
	hello := map[string]any{"revision": from, "mesh": mesh}
	if snapshot {
		hello["snapshot"] = true
	}
	if err := send("hello", hello); err != nil {
		return
	}
	if snapshot {
		for i := 0; i < len(snap); i += snapshotChunk {
			if err := send("snapshot", map[string]any{"resources": snap[i:min(i+snapshotChunk, len(snap))]}); err != nil {
				return
			}
		}
		if err := send("snapshot-end", map[string]any{"revision": from, "complete": complete}); err != nil {
			return
		}
		snap = nil // the stream may last: let the collector have it
		if reading {
			<-e.snapshots
			reading = false
		}
	}
	digest := ""
	var proxiesTick <-chan time.Time // nil: no proxies events
	if e.cfg.ProxiesDigest != nil {
		t := time.NewTicker(e.cfg.ProxiesInterval)
		defer t.Stop()
		proxiesTick = t.C
		digest = e.cfg.ProxiesDigest()
	}
	keep := time.NewTicker(e.cfg.KeepAlive)
	defer keep.Stop()
	age := time.NewTimer(e.cfg.MaxStreamAge)
	defer age.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-age.C:
			send("reconnect", map[string]any{"reason": "the stream reached its maximum age; connect again"})
			return
		case <-credsChanged:
			send("reconnect", map[string]any{"reason": "the server's credentials changed; connect again"})
			return
		case <-e.cfg.Stop:
			return
		case c, ok := <-changes:
			if !ok {
				// Dropped by the store (we fell behind, or history was
				// compacted): the client reloads what it shows.
				send("resync", map[string]any{"reason": "the event stream fell behind"})
				return
			}
			for _, ev := range c.Events {
				ref, ok := appmesh.ParseKey(ev.KV.Key)
				if !ok || ref.Mesh != mesh || ref.Owner != owner || (allowed != nil && !allowed(ref)) {
					continue
				}
				op := "put"
				if ev.Type == store.EventDelete {
					op = "delete"
				}
				if err := send("change", Event{Revision: c.Revision, Kind: ref.Kind, Mesh: ref.Mesh, Parent: ref.Parent, Name: ref.Name, Op: op}); err != nil {
					e.cfg.Log.Debug("event subscriber dropped", "mesh", mesh, "err", err)
					return
				}
			}
		case <-proxiesTick:
			if d := e.cfg.ProxiesDigest(); d != digest {
				digest = d
				if err := send("proxies", map[string]any{"at": time.Now().UTC()}); err != nil {
					return
				}
			}
		case <-keep.C:
			if err := send("keep-alive", nil); err != nil {
				return
			}
		}
	}
}
