package xdsclient

import (
	"context"
	"fmt"
	"maps"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// deltaStream runs one delta ADS stream until it fails or ctx ends: it
// opens each type the proxy holds with the versions it holds, so that a
// reconnect is sent only what changed meanwhile.
func (c *Client) deltaStream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open delta ads stream: %w", err)
	}
	for _, t := range c.types {
		t.onStream, t.requested = nil, false // subscriptions belong to a stream
	}
	// Clusters first, then listeners, as Envoy does; endpoints, routes and
	// secrets already known are subscribed at once.
	for _, url := range []string{ClusterType, EndpointType, ListenerType, RouteType, SecretType} {
		if err := c.deltaSubscribe(st, c.types[url]); err != nil {
			return false, err
		}
	}
	c.setConnected(true)
	defer c.setConnected(false)
	for {
		resp, err := st.Recv()
		if err != nil {
			return progressed, fmt.Errorf("receive: %w", err)
		}
		progressed = true
		t, ok := c.types[resp.GetTypeUrl()]
		if !ok {
			c.log.Warn("xds response of an unrequested type", "type", resp.GetTypeUrl())
			continue
		}
		subs, applyErr := c.applyDelta(ctx, t, resp)
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t.url, ResponseNonce: resp.GetNonce()}
		if applyErr != nil {
			c.Rejected.Add(1)
			c.log.Warn("xds update rejected", "type", short(t.url), "version", resp.GetSystemVersionInfo(), "err", applyErr)
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: applyErr.Error()}
		} else {
			c.Accepted.Add(1)
			t.version = resp.GetSystemVersionInfo()
			c.log.Debug("xds update accepted", "type", short(t.url), "version", t.version, "resources", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
		}
		if err := st.Send(ack); err != nil {
			return progressed, fmt.Errorf("send %s ack: %w", short(t.url), streamEnd(err, st.Recv))
		}
		for _, sub := range subs {
			dep := c.types[sub.url]
			if slices.Equal(dep.names, sub.names) {
				continue
			}
			dep.names = sub.names
			for n := range dep.resources {
				if _, keep := slices.BinarySearch(dep.names, n); !keep {
					delete(dep.resources, n)
					delete(dep.versions, n)
				}
			}
			if err := c.deltaSubscribe(st, dep); err != nil {
				return progressed, err
			}
		}
	}
}

// deltaSubscribe tells the server the names of t to add and drop on this
// stream; the first request of a type carries the versions the proxy
// holds. A wildcard type's first request names nothing (every resource);
// a named type is not asked for before it has names, since a first
// request naming nothing would mean every resource too.
func (c *Client) deltaSubscribe(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, t *typeState) error {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t.url}
	if !t.requested {
		if !t.wildcard && len(t.names) == 0 {
			return nil
		}
		req.Node = c.cfg.Node
		req.InitialResourceVersions = maps.Clone(t.versions)
		t.requested = true
	}
	if !t.wildcard {
		for _, n := range t.names {
			if _, ok := slices.BinarySearch(t.onStream, n); !ok {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
			}
		}
		for _, n := range t.onStream {
			if _, ok := slices.BinarySearch(t.names, n); !ok {
				req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
			}
		}
		t.onStream = slices.Clone(t.names)
	}
	if err := st.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", short(t.url), streamEnd(err, st.Recv))
	}
	return nil
}

// applyDelta merges a delta response into the accepted resources of its
// type and hands the result to the handler; on success it commits it,
// with the resources' versions.
func (c *Client) applyDelta(ctx context.Context, t *typeState, resp *discoveryv3.DeltaDiscoveryResponse) ([]subscription, error) {
	next := maps.Clone(t.resources)
	versions := maps.Clone(t.versions)
	fresh := map[string]bool{}
	for i, r := range resp.GetResources() {
		m, name, err := decode(r.GetResource(), t.url)
		if err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		if r.GetName() != "" && r.GetName() != name {
			return nil, fmt.Errorf("resource %d: named %q, holds %q", i, r.GetName(), name)
		}
		if fresh[name] {
			return nil, fmt.Errorf("duplicate resource %q", name)
		}
		fresh[name] = true
		if !t.wildcard {
			if _, ok := slices.BinarySearch(t.names, name); !ok {
				continue // not subscribed (any more): ignore, as Envoy does
			}
		}
		next[name] = m
		versions[name] = r.GetVersion()
	}
	for _, name := range resp.GetRemovedResources() {
		delete(next, name)
		delete(versions, name)
	}
	subs, err := c.handOver(ctx, t, resp.GetSystemVersionInfo(), next)
	if err != nil {
		return nil, err
	}
	t.versions = versions
	return subs, nil
}
