package httpconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

func TestH1Drain(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	srv := startH1(t, func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		echo(ctx, w, r)
	})
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", srv.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	idle, idleBr := dial()
	_, _ = io.WriteString(idle, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(idleBr, nil); err != nil || body(resp) != "GET /a " {
		t.Fatal(resp, err)
	}
	busy, busyBr := dial()
	_, _ = io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	srv.mu.Lock()
	for _, hc := range srv.conns {
		hc.drain()
	}
	srv.mu.Unlock()
	if _, err := idleBr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after drain: %v, want EOF", err)
	}
	close(release)
	resp, err := http.ReadResponse(busyBr, nil)
	if err != nil || body(resp) != "GET /slow " {
		t.Fatalf("the busy connection's response: %v %v", resp, err)
	}
	if _, err := busyBr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("busy connection after its response: %v, want EOF", err)
	}
}

// TestServerShutdown: Run returns once fast-path connections are done,
// including one that never sent a byte, without waiting for its idle
// timeout.
func TestServerShutdown(t *testing.T) {
	s := NewServer(slog.New(slog.DiscardHandler), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }() // ends with cancel below
	client, server := net.Pipe()
	defer client.Close()
	connDone := make(chan struct{})
	go func() { // the listener's connection goroutine; ends when shutdown closes the connection
		defer close(connDone)
		s.serveH1(ctx, &listener.Conn{Conn: server}, &HCM{})
	}()
	waitFor(t, "the connection to be tracked", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.h1conns) == 1
	})
	cancel()
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	select {
	case <-connDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the silent connection was not closed")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
