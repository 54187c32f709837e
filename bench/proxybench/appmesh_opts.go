package main

import "time"

// appmeshOpts are the flags -appmesh reads.
type appmeshOpts struct {
	weft, weftB, app string
	proxy, proxyB    string   // the sidecars' binaries; -weft's and -weft-b's when empty
	args, argsB      []string // the sidecars' extra arguments (-weft-args, -weft-b-args)
	logs, hold       bool
	rate, conns      int
	rounds, satConns int
	dur, satDur      time.Duration
}
