package server

import (
	"testing"

	xdsstream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// TestResubscribeKeepsSharedReturned: a stream's returned resources may
// be the map of a full response, shared by every stream sent it. A
// client that named resources and then names none (a gRPC client
// dropping a type) unsubscribes from all of them: its own record
// empties, the shared map stays whole (it was emptied in place, under
// the other streams' reads). Envoy's wildcard requests, which name
// nothing from the start, change neither.
func TestResubscribeKeepsSharedReturned(t *testing.T) {
	full := func() map[string]string { return map[string]string{"a": "v1", "b": "v1"} }

	shared := full()
	named := &streamType{sub: xdsstream.NewSotwSubscription([]string{"a", "b"}, true)}
	named.sub.SetReturnedResources(shared)
	resubscribe(named, nil)
	if len(shared) != 2 {
		t.Fatalf("unsubscribing one stream from everything left the shared map with %v", shared)
	}
	if got := named.sub.ReturnedResources(); len(got) != 0 {
		t.Errorf("a stream that named nothing still holds %v", got)
	}

	shared = full()
	wildcard := &streamType{sub: xdsstream.NewSotwSubscription(nil, true), legacyWildcard: true}
	wildcard.sub.SetReturnedResources(shared)
	resubscribe(wildcard, nil) // Envoy's ACK of a wildcard type
	if got := wildcard.sub.ReturnedResources(); len(got) != 2 || len(shared) != 2 || !wildcard.sub.IsWildcard() {
		t.Fatalf("a wildcard ACK changed the subscription: returned %v, shared %v, wildcard %t", got, shared, wildcard.sub.IsWildcard())
	}
	resubscribe(wildcard, []string{"a"})
	resubscribe(wildcard, nil)
	if len(shared) != 2 {
		t.Fatalf("a former wildcard stream's unsubscription left the shared map with %v", shared)
	}
	if got := wildcard.sub.ReturnedResources(); len(got) != 0 || wildcard.sub.IsWildcard() {
		t.Errorf("after naming a, then nothing: returned %v, wildcard %t; want nothing", got, wildcard.sub.IsWildcard())
	}
}
