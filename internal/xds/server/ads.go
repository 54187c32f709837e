package server

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ads is the aggregated discovery service, in both its variants: state of
// the world (StreamAggregatedResources, as App Mesh served it) and delta
// (DeltaAggregatedResources, incremental). Both run the same loop over a
// stream (stream.go), served from the identity's one snapshot.
//
// go-control-plane's servers build a reflect.Select over every watch's
// channel at each message, which cost 7 % of the server's CPU with 1,000
// proxies; here the hub wakes a stream through one channel and the stream
// works out its responses itself.
type ads struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	hub *hub
	// done is the server's context's: when it is closed, every stream
	// ends with OK.
	done    <-chan struct{}
	streams atomic.Int64 // the last stream id given
	limits  Limits
	open    atomic.Int64 // streams open, at most limits.MaxStreams
	obs     Observer     // Options.Observer; nil: none
	// preEncode: the gRPC server's codec is xdsCodec, which sends
	// preEncoded responses.
	preEncode bool
}

func (a *ads) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return serve(a, st, false, func(req *discovery.DiscoveryRequest) request {
		return request{typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), errDetail: req.GetErrorDetail(),
			version: req.GetVersionInfo(), names: req.GetResourceNames()}
	}, func(o *outgoing) error {
		if o.enc.set() {
			return st.SendMsg(&o.enc)
		}
		return st.Send(o.sotw)
	})
}

func (a *ads) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return serve(a, st, true, func(req *discovery.DeltaDiscoveryRequest) request {
		return request{typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), errDetail: req.GetErrorDetail(),
			subscribe: req.GetResourceNamesSubscribe(), unsub: req.GetResourceNamesUnsubscribe(), initial: req.GetInitialResourceVersions()}
	}, func(o *outgoing) error { return st.Send(o.delta) })
}

// xdsRequest is a request of either variant.
type xdsRequest interface {
	*discovery.DiscoveryRequest | *discovery.DeltaDiscoveryRequest
	GetTypeUrl() string
}

// serve runs one stream of either variant until the client ends it, it
// breaks, the hub closes it, or the server stops.
func serve[R xdsRequest](a *ads, st grpc.ServerStream, delta bool, parse func(R) request, send func(*outgoing) error) error {
	release, err := a.admitStream()
	if err != nil {
		return err
	}
	defer release()
	ctx := st.Context()
	var addr string
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		addr = pr.Addr.String()
	}
	s := a.hub.open(a.streams.Add(1), delta, addr)
	s.obs = a.obs
	s.preEncode = a.preEncode && !delta
	defer a.hub.close(s)

	// The stream's turn (s.turn) is held by the goroutine that handles a
	// request or sends: the stream's state and st's SendMsg are used by
	// one at a time. A request is handled on the goroutine that received
	// it, without a hand-off; a push, by the hub's fan-out when the
	// stream is idle (push.go), else on this goroutine when woken.
	turn := &s.turn
	defer func() {
		turn.Lock()
		s.ended = true
		turn.Unlock()
	}()
	// One message for every request: handling one is over before the
	// next is received, and decoding replaces every field (what a request
	// left to the stream, its names or its node, is not the message's any
	// more). into is what RecvMsg decodes into: a state-of-the-world
	// stream's is sotw when the codec is xdsCodec (decode.go).
	var req R
	var into any
	var sotw *sotwRecv
	switch any(req).(type) {
	case *discovery.DiscoveryRequest:
		r := new(discovery.DiscoveryRequest)
		req, into = any(r).(R), r
		if a.preEncode {
			sotw = &sotwRecv{req: r}
			into = sotw
		}
	default:
		req = any(new(discovery.DeltaDiscoveryRequest)).(R)
		into = req
	}
	var out []outgoing
	// push sends what the stream owes, at most limit responses (0: no
	// limit); called with turn held, by this handler's goroutines or the
	// hub's fan-out (s.send). windowed: a new snapshot's push to an idle
	// stream takes a slot of the push window first, or waits for one;
	// the answer to a new subscription does not wait.
	push := func(limit int, windowed bool) (sent int, more bool, err error) {
		if windowed && s.owesWrite() && !a.hub.win.take(s) {
			return 0, false, nil // queued: pushed to when a slot frees (window.go)
		}
		if out, more, err = s.next(a.hub, out[:0], limit); err != nil {
			return 0, false, err
		}
		if sotw != nil && len(out) > 0 {
			sotw.setSent(s) // before the client can ACK it
		}
		for i := range out {
			if err := send(&out[i]); err != nil {
				return 0, false, err
			}
		}
		if sent = len(out); sent > 0 {
			a.hub.bump()
		}
		clear(out)
		return sent, more, nil
	}
	// Before identify: the fan-out finds s only after it.
	s.send = func(limit int) (int, bool, error) { return push(limit, true) }
	// receive handles one request; called with turn held.
	receive := func(req R) error {
		if s.ended {
			return errStreamDone
		}
		if req.GetTypeUrl() == "" {
			return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
		}
		if s.is == nil {
			// The first request names the proxy; Envoy repeats the
			// node in every request, gRPC clients only in the first.
			if err := a.hub.identify(ctx, s, nodeOf(req)); err != nil {
				a.hub.metrics.rejected.WithLabelValues(status.Code(err).String()).Inc()
				return err
			}
		}
		if err := s.handle(ctx, a.hub, parse(req)); err != nil {
			return err
		}
		// An ACK's or NACK's push is windowed like the fan-out's; the
		// answer to a subscription is not.
		_, _, err := push(0, !s.asked)
		return err
	}
	// ended gets the error a request ends the stream with, nil when the
	// client closed it or it broke.
	ended := make(chan error, 1)
	go func() { // ends when RecvMsg fails, which it does once this handler returns, or a request ends the stream
		for {
			if err := st.RecvMsg(into); err != nil {
				ended <- nil
				return
			}
			turn.Lock()
			err := receive(req)
			if sotw != nil {
				sotw.skipNode = s.is != nil
			}
			next := s.settle(a.hub.win) // an ACK frees the stream's slot
			turn.Unlock()
			a.hub.win.run(next)
			if err != nil {
				if errors.Is(err, errStreamDone) {
					err = nil
				}
				ended <- err
				return
			}
		}
	}()

	// A stream that does not say who it is within FirstRequestTimeout is
	// closed: it holds one of MaxStreams' slots.
	first := time.NewTimer(a.limits.FirstRequestTimeout)
	defer first.Stop()
	firstC := first.C
	// A stream that reached its age ends with OK: the proxy connects
	// again and is authorized again (Limits.MaxStreamAge).
	age := time.NewTimer(a.limits.streamAge(rand.Float64()))
	defer age.Stop()
	for {
		select {
		case <-a.done:
			return nil
		case <-age.C:
			return nil
		case <-firstC:
			firstC = nil
			turn.Lock()
			identified := s.is != nil
			turn.Unlock()
			if !identified {
				a.hub.metrics.rejected.WithLabelValues(codes.DeadlineExceeded.String()).Inc()
				return status.Errorf(codes.DeadlineExceeded, "no request naming the node within %s of the stream's start", a.limits.FirstRequestTimeout)
			}
		case err := <-ended:
			return err // nil: the client closed the stream, or it broke
		case <-s.wake:
			turn.Lock()
			err := s.pushErr // a push of the fan-out's failed
			if err == nil {
				_, _, err = push(0, true)
			}
			next := s.settle(a.hub.win)
			turn.Unlock()
			a.hub.win.run(next)
			if err != nil {
				return err
			}
		}
	}
}

// errStreamDone: a request arrived as the stream's handler returned.
var errStreamDone = errors.New("stream done")

func nodeOf[R xdsRequest](req R) *core.Node {
	switch r := any(req).(type) {
	case *discovery.DiscoveryRequest:
		return r.GetNode()
	case *discovery.DeltaDiscoveryRequest:
		return r.GetNode()
	}
	return nil
}
