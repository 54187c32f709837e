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

// BenchmarkIdleHeap: the Go heap a Conn keeps while its connection is idle
// after one 1 KB request and response (the tls.Conn inside, its record
// buffers, the output buffer), per connection; 200 connections in memory,
// both ends tlsrec, the pair's heap halved. A loop holds this and no
// goroutine; a tls.Conn on the goroutine path holds the same tls.Conn
// plus a goroutine's stack.
//
//	go test -run '^$' -bench IdleHeap -benchtime 1x ./internal/proxy/evloop/tlsrec
func BenchmarkIdleHeap(b *testing.B) {
	const n = 200
	scfg, ccfg := configs(b, tls.VersionTLS13)
	ccfg.ClientSessionCache = nil
	scfg.SessionTicketsDisabled = true // no ticket cache growing with n
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]*Conn, 0, 2*n)
		for range n {
			sraw, craw := net.Pipe()
			cres := make(chan *Conn, 1)
			go func() { // ends with the client's handshake
				c, err := Handshake(context.Background(), craw, Client(ccfg))
				if err != nil {
					b.Error(err)
				}
				cres <- c
			}()
			srv, err := Handshake(context.Background(), sraw, Server(scfg))
			cli := <-cres
			if err != nil || cli == nil {
				b.Fatal(err)
			}
			sraw.Close()
			craw.Close()
			if _, err := cli.Write(make([]byte, 1024)); err != nil {
				b.Fatal(err)
			}
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
			conns = append(conns, srv, cli)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(conns)), "heap-B/conn")
		runtime.KeepAlive(conns)
	}
}
