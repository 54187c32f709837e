package tlsrec

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRoundTrip1KB: a crypto/tls client sends 1 KB and reads 1 KB
// back over loopback TCP, the server side either a tls.Conn on its socket
// (the goroutine path) or a Conn fed by a read loop (the event loop's
// path, minus epoll). cpu-ns/op is the process's user+system CPU per
// round trip, both sides included: the difference between the two is the
// indirection's cost. "plaintext" is the same exchange without TLS on
// either side, the floor the other two are read against. The sockets'
// deadlines bound a stuck run.
//
//	go test -run '^$' -bench RoundTrip1KB -benchtime 20000x ./internal/proxy/evloop/tlsrec
func BenchmarkRoundTrip1KB(b *testing.B) {
	for _, tc := range []struct {
		name  string
		serve func(raw net.Conn, scfg *tls.Config) error
	}{
		{"plaintext", nil},
		{"tls.Conn", serveTLSConn},
		{"tlsrec", serveTLSRec},
	} {
		b.Run(tc.name, func(b *testing.B) {
			scfg, ccfg := configs(b, tls.VersionTLS13)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			served := make(chan error, 1)
			go func() { // ends when the client closes its connection
				raw, err := ln.Accept()
				if err != nil {
					served <- err
					return
				}
				defer raw.Close()
				_ = raw.SetDeadline(time.Now().Add(5 * time.Minute))
				if tc.serve == nil {
					served <- servePlain(raw)
					return
				}
				served <- tc.serve(raw, scfg)
			}()
			var c net.Conn
			if tc.serve == nil {
				c, err = net.Dial("tcp", ln.Addr().String())
			} else {
				c, err = tls.Dial("tcp", ln.Addr().String(), ccfg)
			}
			if err != nil {
				b.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
			req := bytes.Repeat([]byte("q"), 1024)
			resp := make([]byte, 1024)
			roundTrip := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 { // warm: buffers grown, tickets taken in
				roundTrip()
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				roundTrip()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
			c.Close()
			if err := <-served; err != nil && err != io.EOF {
				b.Fatal(err)
			}
		})
	}
}

// servePlain answers each 1 KB request with 1 KB, no TLS.
func servePlain(raw net.Conn) error {
	buf := make([]byte, 1024)
	for {
		if _, err := io.ReadFull(raw, buf); err != nil {
			return err
		}
		if _, err := raw.Write(buf); err != nil {
			return err
		}
	}
}

// serveTLSConn answers each 1 KB request with 1 KB on a tls.Conn.
func serveTLSConn(raw net.Conn, scfg *tls.Config) error {
	c := tls.Server(raw, scfg)
	buf := make([]byte, 1024)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
}

// serveTLSRec does the same as a loop would: read, Feed, Write, flush.
func serveTLSRec(raw net.Conn, scfg *tls.Config) error {
	c, err := Handshake(context.Background(), raw, Server(scfg))
	if err != nil {
		return err
	}
	buf := make([]byte, 16<<10)
	plain := make([]byte, 0, 4096)
	if plain, err = c.Feed(plain, nil); err != nil {
		return err
	}
	for {
		for len(plain) >= 1024 {
			if _, err := c.Write(plain[:1024]); err != nil {
				return err
			}
			plain = plain[:copy(plain, plain[1024:])]
		}
		for out := c.Pending(); len(out) > 0; out = c.Pending() {
			n, err := raw.Write(out)
			c.Drain(n)
			if err != nil {
				return err
			}
		}
		n, err := raw.Read(buf)
		if err != nil {
			return err
		}
		if plain, err = c.Feed(plain, buf[:n]); err != nil {
			return err
		}
	}
}

func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkRecords1KB: the record layer alone, no socket: a 1 KB request
// sealed by one Conn and opened by another, a 1 KB response back (two
// seals and two opens per op, both ends' share). Half of it is what TLS
// adds to a request served on a loop, over the plaintext path.
//
//	go test -run '^$' -bench Records1KB ./internal/proxy/evloop/tlsrec
func BenchmarkRecords1KB(b *testing.B) {
	scfg, ccfg := configs(b, tls.VersionTLS13)
	sraw, craw := net.Pipe()
	defer sraw.Close()
	defer craw.Close()
	type result struct {
		c   *Conn
		err error
	}
	cres := make(chan result, 1)
	go func() { // ends with the client's handshake
		c, err := Handshake(context.Background(), craw, Client(ccfg))
		cres <- result{c, err}
	}()
	srv, err := Handshake(context.Background(), sraw, Server(scfg))
	if err != nil {
		b.Fatal(err)
	}
	r := <-cres
	if r.err != nil {
		b.Fatal(r.err)
	}
	cli := r.c
	req := bytes.Repeat([]byte("q"), 1024)
	plain := make([]byte, 0, 4096)
	roundTrip := func() {
		if _, err := cli.Write(req); err != nil {
			b.Fatal(err)
		}
		out := cli.Pending()
		if plain, err = srv.Feed(plain[:0], out); err != nil || len(plain) != 1024 {
			b.Fatalf("server: %d bytes, %v", len(plain), err)
		}
		cli.Drain(len(out))
		if _, err := srv.Write(plain); err != nil {
			b.Fatal(err)
		}
		out = srv.Pending()
		if plain, err = cli.Feed(plain[:0], out); err != nil || len(plain) != 1024 {
			b.Fatalf("client: %d bytes, %v", len(plain), err)
		}
		srv.Drain(len(out))
	}
	// The client takes in the server's session tickets first.
	if plain, err = cli.Feed(plain[:0], nil); err != nil {
		b.Fatal(err)
	}
	for range 100 {
		roundTrip()
	}
	b.ReportAllocs()
	b.SetBytes(2048)
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}

// BenchmarkIdleMemory: the memory a TLS connection keeps while idle
// after one 1 KB request and response: Go heap and goroutine stacks over
// 200 connections, per connection. The client end is a Conn in both; the
// server end is a Conn ("tlsrec": what a loop would hold, no goroutine) or
// a tls.Conn with a goroutine blocked in Read for the next request
// ("tls.Conn+goroutine": the goroutine path). Both ends are counted, so
// the difference between the two is the server end's.
//
//	go test -run '^$' -bench IdleMemory -benchtime 1x ./internal/proxy/evloop/tlsrec
func BenchmarkIdleMemory(b *testing.B) {
	const n = 200
	for _, onLoop := range []bool{true, false} {
		name := "tlsrec"
		if !onLoop {
			name = "tls.Conn+goroutine"
		}
		b.Run(name, func(b *testing.B) {
			scfg, ccfg := configs(b, tls.VersionTLS13)
			scfg.SessionTicketsDisabled = true // no ticket cache growing with n
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				var keep []any
				var pipes []net.Conn
				for range n {
					sraw, craw := net.Pipe()
					pipes = append(pipes, sraw, craw)
					keep = append(keep, idlePair(b, sraw, craw, scfg, ccfg, onLoop)...)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				used := int64(after.HeapAlloc+after.StackInuse) - int64(before.HeapAlloc+before.StackInuse)
				b.ReportMetric(float64(used)/n, "B/conn")
				runtime.KeepAlive(keep)
				for _, c := range pipes {
					c.Close() // ends the blocked server goroutines
				}
			}
		})
	}
}

// idlePair makes one connection over a pipe, runs one 1 KB exchange and
// returns what must stay alive: the client Conn and the server end.
func idlePair(b *testing.B, sraw, craw net.Conn, scfg, ccfg *tls.Config, onLoop bool) []any {
	type result struct {
		c   *Conn
		err error
	}
	cres := make(chan result, 1)
	go func() { // ends with the client's handshake
		c, err := Handshake(context.Background(), craw, Client(ccfg))
		cres <- result{c, err}
	}()
	var srv *Conn
	var stc *tls.Conn
	var err error
	if onLoop {
		srv, err = Handshake(context.Background(), sraw, Server(scfg))
	} else {
		stc = tls.Server(sraw, scfg)
		err = stc.Handshake()
	}
	r := <-cres
	if err != nil || r.err != nil {
		b.Fatal(err, r.err)
	}
	cli := r.c
	if _, err := cli.Write(make([]byte, 1024)); err != nil {
		b.Fatal(err)
	}
	if onLoop {
		plain, err := srv.Feed(nil, cli.Pending())
		if err != nil || len(plain) != 1024 {
			b.Fatal(len(plain), err)
		}
		cli.Drain(len(cli.Pending()))
		if _, err := srv.Write(plain); err != nil {
			b.Fatal(err)
		}
		if plain, err = cli.Feed(nil, srv.Pending()); err != nil || len(plain) != 1024 {
			b.Fatal(len(plain), err)
		}
		srv.Drain(len(srv.Pending()))
		return []any{cli, srv}
	}
	go func() { // ends when the pipe is closed: serves one request, then waits for the next
		buf := make([]byte, 1024)
		if _, err := io.ReadFull(stc, buf); err != nil {
			return
		}
		if _, err := stc.Write(buf); err != nil {
			return
		}
		_, _ = stc.Read(buf[:1])
	}()
	if _, err := craw.Write(cli.Pending()); err != nil {
		b.Fatal(err)
	}
	cli.Drain(len(cli.Pending()))
	buf := make([]byte, 2048)
	var plain []byte
	for len(plain) < 1024 {
		m, err := craw.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		if plain, err = cli.Feed(plain, buf[:m]); err != nil {
			b.Fatal(err)
		}
	}
	return []any{cli, stc}
}
