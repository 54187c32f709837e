package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/bench/adsfloor/h2ads"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// adsPath is the ADS method's HTTP/2 path.
const adsPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

// roundTimeout bounds the wait for a round's last ACK.
const roundTimeout = 60 * time.Second

// push is one round's response, shared by every stream.
type push struct {
	round   uint64
	version string
	body    []byte // the DiscoveryResponse but for its nonce
}

// target is one stream as the fan-out sees it.
type target interface {
	// send writes p to the stream with its nonce, on the fan-out's
	// goroutine.
	send(p *push, id int) error
}

// member is one stream of the hub.
type member struct {
	id    int
	t     target
	acked atomic.Uint64 // the last round acknowledged
}

// hub holds the streams, pushes to them and counts their ACKs.
type hub struct {
	n     int
	ready chan struct{} // closed when n streams have joined

	mu      sync.Mutex // protects members until ready is closed
	members []*member

	cur     atomic.Pointer[push]
	pending atomic.Int64
	done    chan struct{} // a value when a round's last ACK is counted
	bad     atomic.Int64  // requests after the first that are not the ACK expected
	errs    atomic.Int64  // sends that failed
}

func newHub(n int) *hub {
	return &hub{n: n, ready: make(chan struct{}), done: make(chan struct{}, 1)}
}

// join adds a stream whose first request has arrived.
func (h *hub) join(t target) *member {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := &member{id: len(h.members), t: t}
	h.members = append(h.members, m)
	if len(h.members) == h.n {
		close(h.ready)
	}
	return m
}

// ack counts req if it is m's first ACK of the current push.
func (h *hub) ack(m *member, req *discovery.DiscoveryRequest) {
	p := h.cur.Load()
	if m == nil || p == nil || !ackMatches(req, p, m.id) || m.acked.Swap(p.round) == p.round {
		h.bad.Add(1)
		return
	}
	if h.pending.Add(-1) == 0 {
		h.done <- struct{}{}
	}
}

// fanout sends p to the first n streams, split between workers
// goroutines, and returns when every send has returned.
func (h *hub) fanout(p *push, workers int) {
	members := h.members[:h.n]
	h.pending.Store(int64(len(members)))
	h.cur.Store(p)
	per := (len(members) + workers - 1) / workers
	var wg sync.WaitGroup
	for i := 0; i < len(members); i += per {
		part := members[i:min(i+per, len(members))]
		wg.Add(1)
		go func() { // ends when its part is sent
			defer wg.Done()
			for _, m := range part {
				if err := m.t.send(p, m.id); err != nil {
					h.errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
}

// serveChild is the server process: it listens on loopback, prints its
// address, waits for n streams' first requests, prints "ready", then per
// line read on stdin pushes one round and prints
// "done <write to last ACK, ns> <fan-out's sends, ns> <CPU so far, ns> <bad> <send errors>".
func serveChild(mode string, n, workers int, cpuprofile string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h := newHub(n)
	stop, err := startServer(mode, ln, h)
	if err != nil {
		return err
	}
	defer stop()
	rc, err := loadRoute()
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	select {
	case <-h.ready:
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("%s: %d of %d streams joined", mode, len(h.members), n)
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for round := uint64(1); in.Scan(); round++ {
		body, err := responseBody(rc, round)
		if err != nil {
			return err
		}
		p := &push{round: round, version: version(round), body: body}
		t0 := time.Now()
		h.fanout(p, workers)
		sent := time.Since(t0)
		select {
		case <-h.done:
		case <-time.After(roundTimeout):
			return fmt.Errorf("%s round %d: %d ACKs missing after %v (%d send errors, %d bad requests)",
				mode, round, h.pending.Load(), roundTimeout, h.errs.Load(), h.bad.Load())
		}
		fmt.Printf("done %d %d %d %d %d\n", time.Since(t0), sent, selfCPU(), h.bad.Load(), h.errs.Load())
	}
	return nil
}

// startServer serves mode's transport on ln for h; stop ends it.
func startServer(mode string, ln net.Listener, h *hub) (stop func(), err error) {
	switch mode {
	case "h2":
		srv := h2ads.New(adsPath, h2Handler{h}, h2ads.Options{})
		go srv.Serve(ln) // ends with srv.Close (stop)
		return srv.Close, nil
	case "tcp", "tcp-handoff":
		go serveTCP(ln, h, mode == "tcp-handoff") // ends when ln is closed (stop)
		return func() { ln.Close() }, nil
	}
	opts, ok := grpcModes[mode]
	if !ok {
		return nil, fmt.Errorf("unknown mode %q", mode)
	}
	codec := encoding.GetCodecV2("proto")
	if codec == nil {
		return nil, errors.New("no proto codec registered")
	}
	gs := grpc.NewServer(append(xdsserver.Limits{}.GRPCOptions(), append(opts(), grpc.ForceServerCodecV2(rawCodec{codec}))...)...)
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, &grpcADS{h: h})
	go gs.Serve(ln) // ends with gs.Stop (stop)
	return gs.Stop, nil
}

// grpcModes are the grpc-go rows: weft's xDS listener's options plus
// these.
var grpcModes = map[string]func() []grpc.ServerOption{
	"grpc": func() []grpc.ServerOption { return nil },
	// The connection's write buffer is taken from a pool per flush
	// and given back, instead of kept per connection.
	"grpc-shared": func() []grpc.ServerOption { return []grpc.ServerOption{grpc.SharedWriteBuffer(true)} },
	// No write buffer: each frame is written to the socket as framed.
	"grpc-nobuf": func() []grpc.ServerOption { return []grpc.ServerOption{grpc.WriteBufferSize(0)} },
	// Stream handlers run on a pool of goroutines (one per core).
	"grpc-workers": func() []grpc.ServerOption {
		return []grpc.ServerOption{grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0)))}
	},
}

// rawResponse is a pre-encoded DiscoveryResponse: body, then nonce.
type rawResponse struct{ body, nonce []byte }

// rawCodec passes a rawResponse's bytes through, as weft's codec does
// with its pre-encoded responses, and is proto's for everything else.
type rawCodec struct{ proto encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawResponse); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.body), mem.SliceBuffer(r.nonce)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c rawCodec) Name() string { return c.proto.Name() }

// grpcADS is the minimal handler: the stream's goroutine receives, the
// fan-out sends.
type grpcADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	h *hub
}

func (a *grpcADS) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req := &discovery.DiscoveryRequest{}
	if err := st.RecvMsg(req); err != nil {
		return err
	}
	m := a.h.join(grpcTarget{st})
	for {
		if err := st.RecvMsg(req); err != nil {
			return nil
		}
		a.h.ack(m, req)
	}
}

type grpcTarget struct{ st grpc.ServerStream }

func (t grpcTarget) send(p *push, id int) error {
	// The nonce's bytes are the stream's until gRPC has written them:
	// one small allocation per push, as in weft's codec.
	return t.st.SendMsg(&rawResponse{body: p.body, nonce: appendNonce(make([]byte, 0, 24), p.round, id)})
}

// h2Handler serves the streams of h2ads: the ACK is decoded and counted
// on the connection's reader goroutine.
type h2Handler struct{ h *hub }

// h2State is a stream's, kept in its State.
type h2State struct {
	m   *member
	req discovery.DiscoveryRequest
}

func (hh h2Handler) Open(s *h2ads.Stream) { s.State = &h2State{} }

func (hh h2Handler) Message(s *h2ads.Stream, msg []byte) {
	st := s.State.(*h2State)
	if err := proto.Unmarshal(msg, &st.req); err != nil {
		hh.h.bad.Add(1)
		return
	}
	if st.m == nil {
		st.m = hh.h.join(h2Target{s})
		return
	}
	hh.h.ack(st.m, &st.req)
}

func (hh h2Handler) Closed(*h2ads.Stream, error) {}

type h2Target struct{ s *h2ads.Stream }

func (t h2Target) send(p *push, id int) error {
	var nonce [32]byte
	return t.s.Send(p.body, appendNonce(nonce[:0], p.round, id))
}
