package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
)

// Service states in the status.
const (
	StateOK          = "ok"          // the record holds the remote's current answer
	StateUnreachable = "unreachable" // the last request failed: the record holds the last answer
	StateNotFound    = "not-found"   // the remote has no such namespace or service: no endpoints
	StateOverLimit   = "over-limit"  // not followed: MaxServices reached
)

// client is what the follower asks a remote; *sd.Client implements it.
type client interface {
	DiscoverInstancesRevision(ctx context.Context, in *sd.DiscoverInstancesRevisionInput, optFns ...func(*sd.Options)) (*sd.DiscoverInstancesRevisionOutput, error)
	DiscoverInstances(ctx context.Context, in *sd.DiscoverInstancesInput, optFns ...func(*sd.Options)) (*sd.DiscoverInstancesOutput, error)
}

// Follower follows the remotes' services into the store.
type Follower struct {
	cfg     Config
	clients []client
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	status map[discovery.ServiceRef]*ServiceStatus
	rounds int64 // completed rounds, for Status
}

// ServiceStatus is what the follower knows of one followed service.
type ServiceStatus struct {
	Remote    string `json:"remote"`
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	State     string `json:"state"`
	// Revision is the remote's instances revision the record holds.
	Revision  int64 `json:"revision"`
	Instances int   `json:"instances"`
	Healthy   int   `json:"healthy"`
	Truncated bool  `json:"truncated,omitempty"`
	// LastSuccess is when the remote last answered for the service.
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
}

// New makes a follower whose SDK clients take their credentials from the
// default chain (or a remote's profile). It reads the shared AWS config
// files but makes no request.
func New(ctx context.Context, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Follower, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	f := &Follower{cfg: cfg, log: log, metrics: newMetrics(reg), status: map[discovery.ServiceRef]*ServiceStatus{}}
	for _, r := range cfg.Remotes {
		c, err := newClient(ctx, r)
		if err != nil {
			return nil, err
		}
		f.clients = append(f.clients, c)
	}
	return f, nil
}

func newClient(ctx context.Context, r Remote) (*sd.Client, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if r.Region != "" {
		opts = append(opts, awsconfig.WithRegion(r.Region))
	}
	if r.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(r.Profile))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("cloud map remote %s: aws config: %w", r.Name, err)
	}
	if ac.Region == "" {
		return nil, fmt.Errorf("cloud map remote %s: no region: give region= or set AWS_REGION", r.Name)
	}
	return sd.NewFromConfig(ac, func(o *sd.Options) {
		o.RetryMaxAttempts = 2
		if r.Endpoint != "" {
			o.BaseEndpoint = aws.String(r.Endpoint)
			o.APIOptions = append(o.APIOptions, noHostPrefix)
		}
	}), nil
}

// noHostPrefix keeps the SDK from sending DiscoverInstances to "data-" +
// the endpoint's host: an endpoint override names the host to use.
func noHostPrefix(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("weftNoHostPrefix",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(smithyhttp.DisableEndpointHostPrefix(ctx, true), in)
		}), middleware.Before)
}

// Run follows until ctx ends: a round at once, then one every Interval.
// With no remote configured it deletes every remote record (a remote
// removed from the configuration stops resolving) and returns.
func (f *Follower) Run(ctx context.Context, st store.Store) error {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		if err := f.Round(ctx, st); err != nil && ctx.Err() == nil {
			f.log.Warn("cloud map remote round", "err", err)
		}
		if len(f.cfg.Remotes) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// followed is one service a round asks for.
type followed struct {
	ref    discovery.ServiceRef
	remote int
	rec    *discovery.RemoteRecord // the stored record; nil if none
}

// Round does one pass: it reads which services the virtual nodes name,
// drops the records nobody needs, and asks the remotes for the rest.
func (f *Follower) Round(ctx context.Context, st store.Store) error {
	var wanted []followed
	var over []discovery.ServiceRef
	var stale []string
	_, err := st.View(ctx, func(tx store.Tx) (err error) {
		wanted, over, stale, err = f.plan(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("read followed services: %w", err)
	}
	if len(stale) > 0 {
		// Planned again in the deleting transaction: between the read
		// above and now, a virtual node may have come to name a service
		// (and another replica stored its record), which must stay.
		if _, err := st.Update(ctx, func(tx store.Tx) error {
			_, _, stale, err := f.plan(tx)
			if err != nil {
				return err
			}
			for _, k := range stale {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("drop unfollowed records: %w", err)
		}
	}
	results := make([]ServiceStatus, len(wanted))
	sem := make(chan struct{}, f.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range wanted {
		sem <- struct{}{}
		wg.Add(1)
		go func() { // ends when the service's requests (bounded by Timeout) and write are done
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = f.poll(ctx, st, wanted[i])
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err // shutting down: the requests failed for that, not the remote
	}
	f.publish(wanted, results, over)
	return nil
}

// plan reads in tx the services to follow (sorted; those past MaxServices
// in over) and the keys of records no longer needed.
func (f *Follower) plan(tx store.Tx) (wanted []followed, over []discovery.ServiceRef, stale []string, err error) {
	refs := map[discovery.ServiceRef]int{}
	records := map[discovery.ServiceRef]*discovery.RemoteRecord{}
	var keys []string
	if len(f.cfg.Remotes) > 0 {
		kvs, err := tx.List(appmesh.KeyPrefix+"res/", "", 0)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, kv := range kvs {
			ref, ok := appmesh.ParseKey(kv.Key)
			if !ok || ref.Kind != appmesh.KindVirtualNode {
				continue
			}
			var vn appmesh.VirtualNodeData
			if json.Unmarshal(kv.Value, &vn) != nil || vn.Spec == nil || vn.Spec.ServiceDiscovery == nil || vn.Spec.ServiceDiscovery.AwsCloudMap == nil {
				continue
			}
			cm := vn.Spec.ServiceDiscovery.AwsCloudMap
			r := discovery.ServiceRef{Namespace: deref(cm.NamespaceName), Service: deref(cm.ServiceName)}
			if i := f.cfg.remoteFor(r.Namespace); i >= 0 && r.Service != "" {
				refs[r] = i
			}
		}
	}
	kvs, err := tx.List(discovery.RemotePrefix, "", 0)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, kv := range kvs {
		r, ok := discovery.ParseRemoteKey(kv.Key)
		var rec discovery.RemoteRecord
		if !ok || json.Unmarshal(kv.Value, &rec) != nil {
			keys = append(keys, kv.Key) // not ours to read: drop it
			continue
		}
		records[r] = &rec
		keys = append(keys, kv.Key)
	}
	for r, i := range refs {
		wanted = append(wanted, followed{ref: r, remote: i, rec: records[r]})
	}
	slices.SortFunc(wanted, func(a, b followed) int { return compareRefs(a.ref, b.ref) })
	if len(wanted) > f.cfg.MaxServices {
		for _, w := range wanted[f.cfg.MaxServices:] {
			over = append(over, w.ref)
		}
		wanted = wanted[:f.cfg.MaxServices]
	}
	keep := map[string]bool{}
	for _, w := range wanted {
		keep[discovery.RemoteKey(w.ref)] = true
	}
	for _, k := range keys {
		if !keep[k] {
			stale = append(stale, k)
		}
	}
	return wanted, over, stale, nil
}

// poll asks for one service's revision, and for its instances when the
// revision moved, and stores the answer. On failure the record stays.
func (f *Follower) poll(ctx context.Context, st store.Store, w followed) ServiceStatus {
	r := f.cfg.Remotes[w.remote]
	s := ServiceStatus{Remote: r.Name, Namespace: w.ref.Namespace, Service: w.ref.Service}
	prev := f.previous(w.ref)
	if prev != nil {
		s.LastSuccess = prev.LastSuccess
	}
	if w.rec != nil {
		s.Revision = w.rec.Revision
		s.Instances, s.Healthy = counts(w.rec)
	}
	fail := func(err error) ServiceStatus {
		if notFound(err) {
			// An answer, not an outage: the service has no endpoints.
			rec := &discovery.RemoteRecord{Remote: r.Name, Revision: -1}
			if werr := f.write(ctx, st, w.ref, rec); werr != nil {
				s.State, s.LastError = StateUnreachable, werr.Error()
				return s
			}
			now := time.Now()
			s.State, s.LastError, s.LastSuccess = StateNotFound, err.Error(), &now
			s.Revision, s.Instances, s.Healthy = -1, 0, 0
			return s
		}
		s.State, s.LastError = StateUnreachable, err.Error()
		return s
	}
	c := f.clients[w.remote]
	rctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	rev, err := c.DiscoverInstancesRevision(rctx, &sd.DiscoverInstancesRevisionInput{
		NamespaceName: aws.String(w.ref.Namespace), ServiceName: aws.String(w.ref.Service),
	})
	cancel()
	f.metrics.request(r.Name, "DiscoverInstancesRevision", err)
	if err != nil {
		return fail(err)
	}
	revision := aws.ToInt64(rev.InstancesRevision)
	if w.rec != nil && w.rec.Revision == revision {
		now := time.Now()
		s.State, s.LastSuccess = StateOK, &now
		if prev != nil {
			s.Truncated = prev.Truncated
		}
		return s
	}
	rctx, cancel = context.WithTimeout(ctx, f.cfg.Timeout)
	out, err := c.DiscoverInstances(rctx, &sd.DiscoverInstancesInput{
		NamespaceName: aws.String(w.ref.Namespace), ServiceName: aws.String(w.ref.Service),
		HealthStatus: types.HealthStatusFilterAll, MaxResults: aws.Int32(MaxInstances),
	})
	cancel()
	f.metrics.request(r.Name, "DiscoverInstances", err)
	if err != nil {
		return fail(err)
	}
	rec := &discovery.RemoteRecord{Remote: r.Name, Revision: revision, Instances: make([]discovery.RemoteInstance, 0, len(out.Instances))}
	if out.InstancesRevision != nil {
		rec.Revision = *out.InstancesRevision
	}
	// A remote that ignores MaxResults must not grow the record beyond
	// the limit.
	for _, in := range out.Instances[:min(len(out.Instances), MaxInstances)] {
		rec.Instances = append(rec.Instances, discovery.RemoteInstance{ID: aws.ToString(in.InstanceId), Attributes: in.Attributes, HealthStatus: string(in.HealthStatus)})
	}
	slices.SortFunc(rec.Instances, func(a, b discovery.RemoteInstance) int { return strings.Compare(a.ID, b.ID) })
	if err := f.write(ctx, st, w.ref, rec); err != nil {
		s.State, s.LastError = StateUnreachable, err.Error()
		return s
	}
	now := time.Now()
	s.State, s.LastSuccess, s.LastError = StateOK, &now, ""
	s.Revision = rec.Revision
	s.Instances, s.Healthy = counts(rec)
	s.Truncated = len(out.Instances) >= MaxInstances
	return s
}

// write stores a record unless the store already holds the same.
func (f *Follower) write(ctx context.Context, st store.Store, ref discovery.ServiceRef, rec *discovery.RemoteRecord) error {
	value, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	key := discovery.RemoteKey(ref)
	_, err = st.Update(ctx, func(tx store.Tx) error {
		kv, ok, err := tx.Get(key)
		if err != nil || (ok && bytes.Equal(kv.Value, value)) {
			return err
		}
		return tx.Put(key, value)
	})
	if err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

func counts(rec *discovery.RemoteRecord) (instances, healthy int) {
	for _, in := range rec.Instances {
		if in.HealthStatus != string(types.HealthStatusUnhealthy) {
			healthy++
		}
	}
	return len(rec.Instances), healthy
}

func (f *Follower) previous(r discovery.ServiceRef) *ServiceStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.status[r]; s != nil {
		c := *s
		return &c
	}
	return nil
}

// publish replaces the status with a round's results.
func (f *Follower) publish(wanted []followed, results []ServiceStatus, over []discovery.ServiceRef) {
	status := make(map[discovery.ServiceRef]*ServiceStatus, len(results)+len(over))
	for i := range results {
		status[wanted[i].ref] = &results[i]
	}
	for _, r := range over {
		i := f.cfg.remoteFor(r.Namespace)
		status[r] = &ServiceStatus{Remote: f.cfg.Remotes[i].Name, Namespace: r.Namespace, Service: r.Service, State: StateOverLimit,
			LastError: fmt.Sprintf("not followed: more than %d services name a remote Cloud Map", f.cfg.MaxServices)}
	}
	f.mu.Lock()
	prev := f.status
	f.status = status
	f.rounds++
	f.mu.Unlock()
	for r, s := range status {
		// A state change is logged once, not at every round.
		if p := prev[r]; p == nil || p.State != s.State {
			lv := slog.LevelInfo
			if s.State != StateOK {
				lv = slog.LevelWarn
			}
			f.log.Log(context.Background(), lv, "cloud map remote service", "remote", s.Remote, "namespace", s.Namespace, "service", s.Service,
				"state", s.State, "instances", s.Instances, "healthy", s.Healthy, "error", s.LastError)
		}
	}
	f.metrics.set(f.cfg.Remotes, status)
}

func compareRefs(a, b discovery.ServiceRef) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Service, b.Service)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// notFound tells the remote's answer that the namespace or service does
// not exist from a failure to get an answer.
func notFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NamespaceNotFound" || ae.ErrorCode() == "ServiceNotFound")
}
