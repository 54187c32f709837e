package main

import (
	"crypto/tls"
	"os"
)

// target is one path the load goes through.
type target struct {
	name  string
	url   string
	procs []*os.Process // whose CPU and memory the row shows
	tls   *tls.Config   // the load generator's TLS (mutual TLS into the first proxy)
}
