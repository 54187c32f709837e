// Package otlptest is an OTLP/gRPC trace collector for tests: a real gRPC
// server on a loopback port that keeps every export request it decodes.
package otlptest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Collector is an OTLP/gRPC trace service keeping what it receives.
type Collector struct {
	collectortrace.UnimplementedTraceServiceServer
	// Addr is the collector's host:port on 127.0.0.1.
	Addr    string
	discard bool // keep nothing (benchmarks)
	mu      sync.Mutex
	reqs    []*collectortrace.ExportTraceServiceRequest
	got     chan struct{}
}

// Start runs a collector until the test ends.
func Start(tb testing.TB) *Collector { return start(tb, false) }

// StartDiscard runs a collector that decodes every request and keeps
// none, for benchmarks, until the benchmark ends.
func StartDiscard(tb testing.TB) *Collector { return start(tb, true) }

func start(tb testing.TB, discard bool) *Collector {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Collector{Addr: ln.Addr().String(), discard: discard, got: make(chan struct{}, 1)}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, c)
	go gs.Serve(ln) // ends with Stop at the test's cleanup
	tb.Cleanup(gs.Stop)
	return c
}

// Export keeps req and signals Got.
func (c *Collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	if !c.discard {
		c.mu.Lock()
		c.reqs = append(c.reqs, req)
		c.mu.Unlock()
	}
	select {
	case c.got <- struct{}{}:
	default:
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Got receives after an export arrived (one signal may stand for
// several).
func (c *Collector) Got() <-chan struct{} { return c.got }

// Requests returns the export requests received so far, in order.
func (c *Collector) Requests() []*collectortrace.ExportTraceServiceRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*collectortrace.ExportTraceServiceRequest(nil), c.reqs...)
}

// Spans returns every span received so far, in order.
func (c *Collector) Spans() []*tracepb.Span {
	var out []*tracepb.Span
	for _, req := range c.Requests() {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				out = append(out, ss.GetSpans()...)
			}
		}
	}
	return out
}

// WaitSpans waits until done holds for the spans received so far and
// returns them; after timeout it fails the test, naming the spans.
func (c *Collector) WaitSpans(tb testing.TB, timeout time.Duration, done func([]*tracepb.Span) bool) []*tracepb.Span {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		spans := c.Spans()
		if done(spans) {
			return spans
		}
		select {
		case <-c.got:
		case <-deadline.C:
			names := make([]string, len(spans))
			for i, s := range spans {
				names[i] = s.GetName()
			}
			tb.Fatalf("after %v, spans received: %v", timeout, names)
			return nil
		}
	}
}

// NeverAnswers listens on a free loopback port and accepts connections
// that it holds open without ever reading or writing: a collector that
// hangs every export. Everything closes in tb's Cleanup.
func NeverAnswers(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() { // accepts until ln closes in Cleanup
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return ln
}
