package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
)

// runRelay is the cheapest HTTP "proxy" Go allows: bytes copied both ways
// by one goroutine per direction, no parsing. Its CPU per request is what
// the runtime and the kernel cost at this rate, before any proxy logic.
func runRelay(listen, to string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relayConn(c, to) // one downstream connection; ends when either side closes
	}
}

// relayConn copies c to a new connection to to and back, until either
// side closes.
func relayConn(c net.Conn, to string) {
	defer c.Close()
	u, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	defer u.Close()
	go func() { // client to upstream; ends at the client's EOF or an error
		_, _ = io.Copy(u, c)
		_ = u.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, u)
}

func (b *bench) startRelay(port int, app string) *os.Process {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	return b.start(self, nil, "-relay", fmt.Sprintf("127.0.0.1:%d", port), "-relay-to", app).Process
}
