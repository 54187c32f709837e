package server

import (
	"context"
	"strconv"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xdsstream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ads is the aggregated discovery service: state of the world only, as App
// Mesh served it; the delta method stays unimplemented.
//
// Each stream runs the loop of go-control-plane's state-of-the-world
// server (pkg/server/sotw/v3, process and StreamHandler), with its
// protocol rules: a request whose nonce is not the latest response's is
// stale and ignored; a request replaces its type's watch, whose unsent
// answer is dropped; the first request's node stands for the later ones;
// responses carry a nonce counting from 1. What differs is the waiting:
// go-control-plane builds a reflect.Select over every watch's channel at
// each message, which cost 7 % of the server's CPU with 1,000 proxies;
// here the hub wakes the loop through one channel when it answers a
// watch, and the loop takes the answer from that watch's channel.
type ads struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	hub *hub
	// ctx is the server's: when it ends, every stream ends with OK.
	ctx     context.Context
	streams atomic.Int64 // the last stream id given
	limits  Limits
	open    atomic.Int64 // streams open, at most limits.MaxStreams
}

// adsWatch is the open watch of one type on one stream, or the last one.
type adsWatch struct {
	cancel func()
	ch     chan cache.Response // cap 1; the hub answers on it once
	sub    xdsstream.Subscription
	nonce  string // of the response to this watch; "" before it
}

func (a *ads) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	release, err := a.admitStream()
	if err != nil {
		return err
	}
	defer release()
	id := a.streams.Add(1)
	ready := a.hub.open(st.Context(), id)
	var watches [numTypes]*adsWatch
	defer func() {
		for _, w := range watches {
			if w != nil {
				w.cancel()
			}
		}
		a.hub.OnStreamClosed(id)
	}()

	reqs := make(chan *discovery.DiscoveryRequest)
	go func() { // ends when Recv fails, which it does once this handler returns
		defer close(reqs)
		for {
			req, err := st.Recv()
			if err != nil {
				return
			}
			select {
			case reqs <- req:
			case <-st.Context().Done():
				return
			case <-a.ctx.Done():
				return
			}
		}
	}()

	var node *core.Node // from the first request that carries one
	var nonce int64
	for {
		select {
		case <-a.ctx.Done():
			return nil
		case req, ok := <-reqs:
			if !ok {
				return nil // the client closed the stream, or it broke
			}
			if req.GetNode() != nil {
				node = req.GetNode()
			} else {
				req.Node = node
			}
			if req.GetTypeUrl() == "" {
				return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
			}
			if err := a.hub.OnStreamRequest(id, req); err != nil {
				return err
			}
			t := typeIndex(req.GetTypeUrl())
			if t < 0 {
				continue // a type weft does not serve: never answered
			}
			w := watches[t]
			var sub xdsstream.Subscription
			if w != nil {
				if w.nonce != "" && req.GetResponseNonce() != w.nonce {
					continue // stale: sent before the client saw our latest response
				}
				w.cancel()
				sub = w.sub
				sub.SetResourceSubscription(req.GetResourceNames())
			} else {
				// Legacy wildcard stays on: Envoy's first LDS and CDS
				// requests name nothing and mean everything.
				sub = xdsstream.NewSotwSubscription(req.GetResourceNames(), true)
			}
			ch := make(chan cache.Response, 1)
			cancel, err := a.hub.CreateWatch(req, sub, ch)
			if err != nil {
				return err
			}
			// The new watch has no nonce until it is answered: the next
			// request is not stale whatever it carries (the hub keeps
			// the same rule).
			watches[t] = &adsWatch{cancel: cancel, ch: ch, sub: sub}
		case <-ready:
			for _, w := range watches {
				if w == nil {
					continue
				}
				select {
				case r := <-w.ch:
					out, err := r.GetDiscoveryResponse()
					if err != nil {
						return err // the hub closes the stream
					}
					nonce++
					out.Nonce = strconv.FormatInt(nonce, 10)
					w.sub.SetReturnedResources(r.GetReturnedResources())
					w.nonce = out.Nonce
					a.hub.OnStreamResponse(r.GetContext(), id, r.GetRequest(), out)
					if err := st.Send(out); err != nil {
						return err
					}
				default:
				}
			}
		}
	}
}
