package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// evloopTargets starts the event-loop prototype (bench/evloopproxy) in
// front of the app, and a second one in front of the first: the same one-
// and two-hop paths as weft proxy's.
func (b *bench) evloopTargets(bin string, loops int, app string) []target {
	p1 := freePort()
	proc1 := b.startEvloop(bin, loops, p1, app)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", p1))
	p2 := freePort()
	proc2 := b.startEvloop(bin, loops, p2, fmt.Sprintf("127.0.0.1:%d", p1))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", p2))
	return []target{
		{"evloop prototype", fmt.Sprintf("http://127.0.0.1:%d/", p1), []*os.Process{proc1}, nil},
		{"two evloop prototypes", fmt.Sprintf("http://127.0.0.1:%d/", p2), []*os.Process{proc2, proc1}, nil},
	}
}

// evloopB starts the prototype with extra arguments in front of the app.
func (b *bench) evloopB(bin string, loops int, app string, extra []string) target {
	p := freePort()
	proc := b.startEvloop(bin, loops, p, app, extra...)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", p))
	fmt.Printf("evloop prototype B: %s\n", strings.Join(extra, " "))
	return target{"evloop prototype B", fmt.Sprintf("http://127.0.0.1:%d/", p), []*os.Process{proc}, nil}
}

// startEvloop runs the prototype on port with one route to upstream.
func (b *bench) startEvloop(bin string, loops, port int, upstream string, extra ...string) *os.Process {
	args := append([]string{"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-loops", strconv.Itoa(loops),
		"-route", "*/=cds_ingress_bench_server_http_9080=" + upstream}, extra...)
	return b.start(bin, nil, args...).Process
}

// selected reports whether the path name passes -only and -skip, each
// a comma-separated list of parts of names: kept if it contains a part
// of -only (or -only is empty) and no part of -skip.
func selected(name, only, skip string) bool {
	if skip != "" && containsAny(name, skip) {
		return false
	}
	return only == "" || containsAny(name, only)
}

// containsAny reports whether name contains one of list's
// comma-separated parts; an empty part (a trailing comma) names nothing.
func containsAny(name, list string) bool {
	for _, part := range strings.Split(list, ",") {
		if part != "" && strings.Contains(name, part) {
			return true
		}
	}
	return false
}
