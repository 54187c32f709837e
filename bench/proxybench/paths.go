package main

import (
	"crypto/tls"
	"fmt"
	"os"
)

// The paths of the HTTP/1.1 table: the app reached directly; one weft
// proxy, and two as sidecar to sidecar, configured over xDS by the
// bench's own server (xds.go); haproxy and two haproxies doing the same
// job; the Go TCP relay and two (relay.go); and the same proxies with
// mutual TLS. -weft-b adds the B paths, run by another build. The h2c,
// HTTP/2-over-mutual-TLS, evloop, tracing and access-log paths are in
// their own files.

// target is one path the load goes through.
type target struct {
	name  string
	url   string
	procs []*os.Process // whose CPU and memory the row shows
	tls   *tls.Config   // the load generator's TLS (mutual TLS into the first proxy)
}

// h1Paths starts the HTTP/1.1 paths' proxies in front of the app, the
// weft proxies with the extra arguments args, and returns the paths in
// the table's order, the slot "one weft proxy B" without a URL (bPaths
// fills it), and the PKI of the mutual-TLS paths. With hold it prints
// their addresses and pids.
func (b *bench) h1Paths(xds *xdsServer, app string, args []string, hold bool) ([]target, *pki) {
	pB, pA := freePort(), freePort()
	// Proxy B is the server's sidecar: ingress to the local app. Proxy A
	// is the client's sidecar: egress to proxy B. Shaped like App Mesh's
	// (weighted cluster, 15 s timeout, retry policy, circuit breakers
	// wide open).
	xds.set("mesh/bench/virtualNode/server", resources("ingress", pB, "cds_ingress_bench_server_http_9080", app, true))
	xds.set("mesh/bench/virtualNode/client", resources("egress", pA, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pB), false))
	procB := b.startProxy(b.weft, "mesh/bench/virtualNode/server", xds.addr, args...)
	procA := b.startProxy(b.weft, "mesh/bench/virtualNode/client", xds.addr, args...)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pB))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pA))
	pH := freePort()
	procH := b.startHAProxy(pH, app)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pH))
	pR := freePort()
	procR := b.startRelay(pR, app)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pR))
	// The same two-hop chains with haproxy and with the relay: what two
	// hops cost on this machine for a C proxy and for Go's floor.
	pH2 := freePort()
	procH2 := b.startHAProxy(pH2, fmt.Sprintf("127.0.0.1:%d", pH))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pH2))
	pR2 := freePort()
	procR2 := b.startRelay(pR2, fmt.Sprintf("127.0.0.1:%d", pR))
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pR2))
	// The mutual-TLS paths: the same sidecars with TLS between them as in
	// a mesh (STRICT listener with validation, enforced client policy),
	// and haproxy doing the same.
	k := newPKI(b.dir)
	pBT, pAT := freePort(), freePort()
	xds.set("mesh/bench/virtualNode/server-tls", k.withMTLS(resources("ingress", pBT, "cds_ingress_bench_server_http_9080", app, true), true, false))
	xds.set("mesh/bench/virtualNode/client-tls", k.withMTLS(resources("egress", pAT, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pBT), false), false, true))
	procBT := b.startProxy(b.weft, "mesh/bench/virtualNode/server-tls", xds.addr, args...)
	procAT := b.startProxy(b.weft, "mesh/bench/virtualNode/client-tls", xds.addr, args...)
	waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/", pBT), k.clientTLS())
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pAT))
	pHT, pHT2 := freePort(), freePort()
	b.startHAProxyTLS(k, pHT, app, true, false)
	procHT := b.procs[len(b.procs)-1].Process
	waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/", pHT), k.clientTLS())
	b.startHAProxyTLS(k, pHT2, fmt.Sprintf("127.0.0.1:%d", pHT), false, true)
	procHT2 := b.procs[len(b.procs)-1].Process
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pHT2))
	if hold {
		fmt.Printf("app %s (pid %d)\none weft proxy http://127.0.0.1:%d/ (pid %d, admin %s)\ntwo weft proxies http://127.0.0.1:%d/ (pid %d, admin %s)\nhaproxy http://127.0.0.1:%d/ (pid %d)\nGo TCP relay http://127.0.0.1:%d/ (pid %d)\none weft proxy, mTLS in https://127.0.0.1:%d/ (pid %d, admin %s; client certificate in %s)\nlogs in %s\n",
			app, b.appPid, pB, procB.Pid, b.admin[procB.Pid], pA, procA.Pid, b.admin[procA.Pid], pH, procH.Pid, pR, procR.Pid, pBT, procBT.Pid, b.admin[procBT.Pid], b.dir, b.dir)
	}
	appProc, _ := os.FindProcess(b.appPid)
	targets := []target{
		{"app direct", "http://" + app + "/", []*os.Process{appProc}, nil},
		{"one weft proxy", fmt.Sprintf("http://127.0.0.1:%d/", pB), []*os.Process{procB}, nil},
		{"one weft proxy B", "", nil, nil}, // with -weft-b only
		{"two weft proxies (sidecar to sidecar)", fmt.Sprintf("http://127.0.0.1:%d/", pA), []*os.Process{procA, procB}, nil},
		{"haproxy", fmt.Sprintf("http://127.0.0.1:%d/", pH), []*os.Process{procH}, nil},
		{"two haproxies", fmt.Sprintf("http://127.0.0.1:%d/", pH2), []*os.Process{procH2, procH}, nil},
		{"Go TCP relay (no HTTP: a Go proxy's floor)", fmt.Sprintf("http://127.0.0.1:%d/", pR), []*os.Process{procR}, nil},
		{"two Go TCP relays", fmt.Sprintf("http://127.0.0.1:%d/", pR2), []*os.Process{procR2, procR}, nil},
		{"one weft proxy, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pBT), []*os.Process{procBT}, k.clientTLS()},
		{"two weft proxies, mTLS between", fmt.Sprintf("http://127.0.0.1:%d/", pAT), []*os.Process{procAT, procBT}, nil},
		{"haproxy, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pHT), []*os.Process{procHT}, k.clientTLS()},
		{"two haproxies, mTLS between", fmt.Sprintf("http://127.0.0.1:%d/", pHT2), []*os.Process{procHT2, procHT}, nil},
	}
	return targets, k
}

// bPaths starts the B paths (-weft-b: one and two weft proxies, plaintext
// and mutual TLS, run by that binary with -weft-b-args), fills targets'
// "one weft proxy B" slot and returns targets with the others appended.
func (b *bench) bPaths(targets []target, xds *xdsServer, k *pki, app string, o opts) []target {
	// The same sidecar as proxy B, run by the other binary.
	pBB := freePort()
	xds.set("mesh/bench/virtualNode/server-b", resources("ingress", pBB, "cds_ingress_bench_server_http_9080", app, true))
	procBB := b.startProxyB(o.weftB, "mesh/bench/virtualNode/server-b", xds.addr, o.bArgs...)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pBB))
	targets[2].url, targets[2].procs = fmt.Sprintf("http://127.0.0.1:%d/", pBB), []*os.Process{procBB}
	// And the client's sidecar in front of it, by the same binary:
	// both hops B.
	pBA := freePort()
	xds.set("mesh/bench/virtualNode/client-b", resources("egress", pBA, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pBB), false))
	procBA := b.startProxyB(o.weftB, "mesh/bench/virtualNode/client-b", xds.addr, o.bArgs...)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pBA))
	targets = append(targets, target{"two weft proxies B", fmt.Sprintf("http://127.0.0.1:%d/", pBA), []*os.Process{procBA, procBB}, nil})
	// The mutual-TLS sidecars, both by the other binary.
	pBBT, pBAT := freePort(), freePort()
	xds.set("mesh/bench/virtualNode/server-tls-b", k.withMTLS(resources("ingress", pBBT, "cds_ingress_bench_server_http_9080", app, true), true, false))
	xds.set("mesh/bench/virtualNode/client-tls-b", k.withMTLS(resources("egress", pBAT, "cds_egress_bench_server_http_9080", fmt.Sprintf("127.0.0.1:%d", pBBT), false), false, true))
	procBBT := b.startProxyB(o.weftB, "mesh/bench/virtualNode/server-tls-b", xds.addr, o.bArgs...)
	procBAT := b.startProxyB(o.weftB, "mesh/bench/virtualNode/client-tls-b", xds.addr, o.bArgs...)
	waitHTTP(fmt.Sprintf("https://127.0.0.1:%d/", pBBT), k.clientTLS())
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pBAT))
	targets = append(targets,
		target{"one weft proxy B, mTLS in", fmt.Sprintf("https://127.0.0.1:%d/", pBBT), []*os.Process{procBBT}, k.clientTLS()},
		target{"two weft proxies B, mTLS between", fmt.Sprintf("http://127.0.0.1:%d/", pBAT), []*os.Process{procBAT, procBBT}, nil})
	fmt.Printf("one weft proxy B, two weft proxies B: %s %s\n", o.weftB, o.weftBArgs)
	return targets
}
