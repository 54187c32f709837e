package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	"github.com/weftmesh/weft/internal/procstat"
)

// The floor of a push: what the server's side of one connection costs
// when a push is one write of a response-sized message and one read of an
// ACK-sized reply over loopback TCP, with plain Go net (no gRPC, no HTTP/2,
// no protobuf): -floor N opens N connections to a child process that does
// only that, and reports the child's CPU per connection and round. The
// figure sits under xDS's per-stream cost: what gRPC, HTTP/2 framing and
// the ADS protocol add is the difference.

// floorServe is the child: it listens on loopback, prints its address,
// accepts conns connections, then for each line read on stdin writes
// msg bytes to every connection, reads ack bytes from each and prints one
// line when every connection's ack is read.
func floorServe(args []string) error {
	var conns, msg, ack int
	if _, err := fmt.Sscan(strings.Join(args, " "), &conns, &msg, &ack); err != nil {
		return fmt.Errorf("floor-serve CONNS MSG ACK: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr())
	payload := make([]byte, msg)
	// Each connection's goroutine waits for its round on a channel of
	// its own, as each ADS stream waits to be woken for a push.
	wake := make([]chan struct{}, conns)
	acked := make(chan struct{}, conns)
	for i := range conns {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		wake[i] = make(chan struct{}, 1)
		go func() { // ends when the parent closes the connection or stdin
			defer c.Close()
			buf := make([]byte, ack)
			for range wake[i] {
				if _, err := c.Write(payload); err != nil {
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				acked <- struct{}{}
			}
		}()
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		for _, w := range wake {
			w <- struct{}{}
		}
		for range conns {
			<-acked
		}
		fmt.Println("done")
	}
	for _, w := range wake {
		close(w)
	}
	return nil
}

// floor runs the parent's side: n client connections, rounds rounds.
func floor(n, msg, ack, rounds int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, "floor-serve", fmt.Sprint(n), fmt.Sprint(msg), fmt.Sprint(ack))
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		child.Wait()
	}()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		return fmt.Errorf("floor server: no address")
	}
	addr := out.Text()
	conns := make([]net.Conn, n)
	for i := range conns {
		if conns[i], err = net.Dial("tcp", addr); err != nil {
			return err
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	reply := make([]byte, ack)
	for _, c := range conns {
		go func() { // ends when the connection is closed
			buf := make([]byte, msg)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(reply); err != nil {
					return
				}
			}
		}()
	}
	round := func() (time.Duration, error) {
		t0 := time.Now()
		if _, err := fmt.Fprintln(stdin, "go"); err != nil {
			return 0, err
		}
		if !out.Scan() {
			return 0, fmt.Errorf("floor server: ended mid-round")
		}
		return time.Since(t0), nil
	}
	if _, err := round(); err != nil { // warm-up
		return err
	}
	load := loadavg.String()
	cpu0 := procstat.CPU(child.Process.Pid)
	self0 := procstat.CPU(os.Getpid())
	r0, w0 := procstat.Syscalls(child.Process.Pid)
	var walls []time.Duration
	for range rounds {
		d, err := round()
		if err != nil {
			return err
		}
		walls = append(walls, d)
	}
	cpu1 := procstat.CPU(child.Process.Pid)
	self1 := procstat.CPU(os.Getpid())
	r1, w1 := procstat.Syscalls(child.Process.Pid)
	per := float64(rounds * n)
	var sum time.Duration
	for _, d := range walls {
		sum += d
	}
	log.Printf("load average before %s, after %s", load, loadavg.String())
	log.Printf("floor: %d loopback TCP connections, %d rounds of one %d-byte write and one %d-byte read per connection (plain Go net, one goroutine per connection)", n, rounds, msg, ack)
	log.Printf("server CPU per connection and round: %.1f µs (%v per round); clients' CPU per connection and round: %.1f µs; round wall mean %v; server system calls per connection and round: %.2f read, %.2f write",
		float64(cpu1-cpu0)/per/1e3, time.Duration(float64(cpu1-cpu0)/float64(rounds)).Round(10*time.Microsecond),
		float64(self1-self0)/per/1e3, (sum / time.Duration(rounds)).Round(10*time.Microsecond),
		float64(r1-r0)/per, float64(w1-w0)/per)
	return nil
}
