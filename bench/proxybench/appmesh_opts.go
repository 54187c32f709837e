package main

import "time"

// appmeshOpts are the flags -appmesh reads.
type appmeshOpts struct {
	weft, weftB, app string
	proxy, proxyB    string // the sidecars' binaries; -weft's and -weft-b's when empty
	logs, hold       bool
	rate, conns      int
	rounds, satConns int
	dur, satDur      time.Duration
}
