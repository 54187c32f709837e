package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// serveTCP is the syscall floor: each message is a 5-byte prefix (as
// gRPC's) and the bytes, over plain TCP; a connection's goroutine reads
// and decodes its requests, the fan-out writes each push with one write.
// With handoff, each push goes through a writer goroutine of the
// connection and each request through a goroutine of the stream, as
// grpc-go's server moves them (its loopyWriter, and the handler's
// RecvMsg): the difference is what the two hand-offs cost.
func serveTCP(ln net.Listener, h *hub, handoff bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go readTCP(c, h, handoff) // ends when the connection fails or the client closes it
	}
}

func readTCP(c net.Conn, h *hub, handoff bool) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 32<<10)
	var m *member
	var req discovery.DiscoveryRequest
	var buf []byte
	var reqs chan []byte
	for {
		msg, err := readFramed(br, &buf)
		if err != nil {
			break
		}
		if m != nil && reqs != nil {
			// The bytes are the stream goroutine's now (grpc-go hands
			// over a buffer of its pool).
			reqs <- append([]byte(nil), msg...)
			continue
		}
		if err := proto.Unmarshal(msg, &req); err != nil {
			h.bad.Add(1)
			continue
		}
		if m != nil {
			h.ack(m, &req)
			continue
		}
		if !handoff {
			m = h.join(&tcpTarget{c: c})
			continue
		}
		ended := make(chan struct{})
		defer close(ended)
		ht := &handoffTarget{tcp: &tcpTarget{c: c}, pushes: make(chan pushTo, 1), ended: ended}
		go ht.write() // ends when the reader returns (ended)
		m = h.join(ht)
		reqs = make(chan []byte, 1)
		go receive(h, m, reqs, ended) // ends when the reader returns (ended)
	}
}

// receive decodes and counts a stream's requests, handed over by its
// connection's reader.
func receive(h *hub, m *member, reqs <-chan []byte, ended <-chan struct{}) {
	var req discovery.DiscoveryRequest
	for {
		var msg []byte
		select {
		case msg = <-reqs:
		case <-ended:
			return
		}
		if err := proto.Unmarshal(msg, &req); err != nil {
			h.bad.Add(1)
			continue
		}
		h.ack(m, &req)
	}
}

// pushTo is one push handed to a connection's writer goroutine.
type pushTo struct {
	p  *push
	id int
}

// handoffTarget sends a push by handing it to the connection's writer
// goroutine.
type handoffTarget struct {
	tcp    *tcpTarget
	pushes chan pushTo
	ended  <-chan struct{} // closed when the connection's reader returns
}

func (t *handoffTarget) send(p *push, id int) error {
	select {
	case t.pushes <- pushTo{p, id}:
		return nil
	case <-t.ended:
		return net.ErrClosed
	}
}

func (t *handoffTarget) write() {
	for {
		select {
		case pt := <-t.pushes:
			t.tcp.send(pt.p, pt.id)
		case <-t.ended:
			return
		}
	}
}

// maxFramed bounds one length-prefixed message, as gRPC's receive limit.
const maxFramed = 4 << 20

// readFramed reads one length-prefixed message into *buf.
func readFramed(r io.Reader, buf *[]byte) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFramed {
		return nil, fmt.Errorf("message of %d bytes", n)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	_, err := io.ReadFull(r, b)
	return b, err
}

// appendFramed appends the length prefix of an n-byte message.
func appendFramed(b []byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, 0), uint32(n))
}

type tcpTarget struct {
	c       net.Conn
	mu      sync.Mutex // protects scratch and the connection's writes
	scratch []byte
}

func (t *tcpTarget) send(p *push, id int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var nonce [32]byte
	n := appendNonce(nonce[:0], p.round, id)
	b := appendFramed(t.scratch[:0], len(p.body)+len(n))
	b = append(append(b, p.body...), n...)
	t.scratch = b[:0]
	_, err := t.c.Write(b)
	return err
}
