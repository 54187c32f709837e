package server

import (
	"strings"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	xdsstream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// What a stream's responses carry: the resources of a type its
// subscription names and it may have (state of the world), or those whose
// version the client does not hold (delta), and the parts of a response
// that carries every resource of a type, built once for every stream sent
// it. The stream's protocol state, and when a response is owed, are in
// stream.go.

// hidesKeys reports whether type t of the stream leaves out the secrets
// holding a key: the stream proved nothing (Options.Authorize) and is not
// served insecurely.
func (s *stream) hidesKeys(t int) bool { return t == typeSecret && !s.secretsOK }

// newNames reports whether the client subscribes to a resource it has not
// been sent on this stream; entries holding a key do not count when
// hideKeys.
func newNames(sub xdsstream.Subscription, ts *typeSnapshot, hideKeys bool) bool {
	returned := sub.ReturnedResources()
	if sub.IsWildcard() {
		for _, e := range ts.entries {
			if _, ok := returned[e.name]; !ok && !(hideKeys && e.key) {
				return true
			}
		}
		return false
	}
	for name := range sub.SubscribedResources() {
		if e := ts.entry(name); e == nil || (hideKeys && e.key) {
			continue
		}
		if _, ok := returned[name]; !ok {
			return true
		}
	}
	return false
}

// subscribesFull reports whether the stream's subscription st takes every
// resource of ts: a wildcard, or one naming them all. Called with mu held.
func (s *stream) subscribesFull(st *streamType, ts *typeSnapshot) bool {
	switch {
	case st.sub.IsWildcard():
		return true
	case ts.full.names != nil && st.allNames == ts.full.names:
		return true
	case subscribesAll(st.sub, ts):
		st.allNames = ts.full.names
		return true
	}
	return false
}

// sotwResponse is the state-of-the-world response of type t: what the
// stream subscribes to and may have. Called with mu held.
func (s *stream) sotwResponse(t int, ts *typeSnapshot) *discovery.DiscoveryResponse {
	st := &s.types[t]
	var anys []*anypb.Any
	var returned map[string]string
	switch {
	case s.hidesKeys(t):
		// Without the secrets holding a key: what the stream may have of
		// what it asked for.
		returned = make(map[string]string)
		for _, e := range ts.entries {
			if _, ok := st.sub.SubscribedResources()[e.name]; (ok || st.sub.IsWildcard()) && !e.key {
				anys = append(anys, e.any)
				returned[e.name] = ts.version
			}
		}
	case s.subscribesFull(st, ts):
		anys, returned = ts.full.get(ts)
	default:
		// Only what was asked for, in name order: a gRPC client asks for
		// the listeners, routes and clusters it uses; asking for a
		// resource that does not exist gets a response without it, which
		// is how the client learns that it does not exist.
		returned = make(map[string]string)
		for _, e := range ts.entries {
			if _, ok := st.sub.SubscribedResources()[e.name]; ok {
				anys = append(anys, e.any)
				returned[e.name] = ts.version
			}
		}
	}
	st.sub.SetReturnedResources(returned)
	// A fresh DiscoveryResponse per stream: it carries the stream's nonce.
	// The Anys inside are shared and only read.
	return &discovery.DiscoveryResponse{VersionInfo: ts.version, Resources: anys, TypeUrl: typeURL(t)}
}

// deltaResponse is the delta response of type t: the subscribed resources
// whose version the client does not hold, and the names it holds or asked
// for that no longer (or never did) exist; nil when there is nothing to
// say, except that a type's first response always goes out (the client
// learns it holds the current state). clusters is the snapshot's CDS: an
// assignment's version includes its cluster's, so that a changed cluster
// is followed by its assignment, as in state of the world (Envoy re-warms
// a changed cluster and waits for its endpoints). Called with mu held.
func (s *stream) deltaResponse(t int, ts, clusters *typeSnapshot) *discovery.DeltaDiscoveryResponse {
	st := &s.types[t]
	hide := s.hidesKeys(t)
	returned := st.sub.ReturnedResources()
	var res []*discovery.Resource
	var removed []string
	send := func(e *entry) {
		if hide && e.key {
			return
		}
		version, salt := e.version, ""
		if c := clusters.entry(e.name); t == typeEndpoint && c != nil {
			salt = c.version
		}
		if v, ok := returned[e.name]; ok && saltedIs(v, version, salt) {
			return
		}
		r := e.res
		if salt != "" {
			r = &discovery.Resource{Name: e.name, Version: version + "." + salt, Resource: e.any}
		}
		res = append(res, r)
		returned[e.name] = r.GetVersion()
	}
	if st.sub.IsWildcard() {
		for _, e := range ts.entries {
			send(e)
		}
	}
	for name := range st.sub.SubscribedResources() {
		if e := ts.entry(name); e != nil && !(hide && e.key) {
			if !st.sub.IsWildcard() {
				send(e)
			}
			continue
		}
		if _, told := st.absent[name]; told {
			continue
		}
		if _, held := returned[name]; held {
			continue // removed below
		}
		if st.absent == nil {
			st.absent = map[string]struct{}{}
		}
		st.absent[name] = struct{}{}
		removed = append(removed, name)
	}
	for name := range returned {
		if e := ts.entry(name); e != nil && !(hide && e.key) {
			continue
		}
		delete(returned, name)
		removed = append(removed, name)
		if _, sub := st.sub.SubscribedResources()[name]; sub {
			if st.absent == nil {
				st.absent = map[string]struct{}{}
			}
			st.absent[name] = struct{}{}
		}
	}
	if len(res) == 0 && len(removed) == 0 && st.sentNonce != "" {
		return nil
	}
	for _, e := range res {
		delete(st.absent, e.GetName())
	}
	return &discovery.DeltaDiscoveryResponse{SystemVersionInfo: ts.version, Resources: res, RemovedResources: removed, TypeUrl: typeURL(t)}
}

// saltedIs reports whether v is version, or version "." salt when salt
// is set, without building the latter.
func saltedIs(v, version, salt string) bool {
	if salt == "" {
		return v == version
	}
	return len(v) == len(version)+1+len(salt) && strings.HasPrefix(v, version) && v[len(version)] == '.' && strings.HasSuffix(v, salt)
}

// subscribesAll reports whether a subscription names every resource of
// ts, as Envoy's EDS and RDS subscriptions do.
func subscribesAll(sub xdsstream.Subscription, ts *typeSnapshot) bool {
	names := sub.SubscribedResources()
	if len(names) < len(ts.entries) {
		return false
	}
	for _, e := range ts.entries {
		if _, ok := names[e.name]; !ok {
			return false
		}
	}
	return true
}

// fullResponse is the resources of a response that carries every
// resource of a typeSnapshot, built once and shared by every stream
// sent it (the replicas of an identity): nobody modifies the slice or
// the map, the streams and go-control-plane's Subscription included.
type fullResponse struct {
	once sync.Once
	anys []*anypb.Any
	// names is the set of the typeSnapshot's names, shared with the
	// identity's earlier snapshots of the type that have the same names;
	// set by the core (install) before the snapshot is handed over.
	names *nameSet

	// encoded is the response's encoding without its nonce, made once
	// for every stream sent it (codec.go).
	encodeOnce sync.Once
	encoded    []byte
}

// body returns the encoding of the response carrying every resource of
// ts, of type t, without its nonce.
func (f *fullResponse) body(ts *typeSnapshot, t int) []byte {
	f.encodeOnce.Do(func() {
		f.encoded = appendResponse(make([]byte, 0, responseSize(ts, t, "")), ts, t, "")
	})
	return f.encoded
}

// get returns the shared resources and the names sent (a stream's
// returned resources), building them on first use.
func (f *fullResponse) get(ts *typeSnapshot) ([]*anypb.Any, map[string]string) {
	f.once.Do(func() {
		f.anys = make([]*anypb.Any, len(ts.entries))
		for i, e := range ts.entries {
			f.anys[i] = e.any
		}
	})
	return f.anys, f.names.get(ts)
}

// nameSet is the names of a type's resources, shared by every snapshot of
// an identity's type that names the same resources in turn (a route
// write changes a route table, not its name): a stream sent one of them
// and then the next is not given a new map of what it was sent.
type nameSet struct {
	once sync.Once
	// returned maps each name to ""; nobody modifies it (see
	// fullResponse). State of the world reads only its names: a request
	// carries one version for the whole type, which the stream keeps.
	returned map[string]string
}

// get returns the set, building it from ts's names on first use.
func (n *nameSet) get(ts *typeSnapshot) map[string]string {
	n.once.Do(func() {
		n.returned = make(map[string]string, len(ts.entries))
		for _, e := range ts.entries {
			n.returned[e.name] = ""
		}
	})
	return n.returned
}
