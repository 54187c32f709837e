package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// tracingOnly reads -tracing-only: a comma-separated list of sample
// rates (fractions, e.g. "0.01" or "0.01,1"). It returns the rates the
// tracing paths run at and, when the list is not empty, which paths the
// run keeps: only the ones that tracing's overhead is read from ("one
// weft proxy", no tracer; "one weft proxy B" with -weft-b, the noise
// between two builds without a tracer; and the tracing paths), so that a
// short quiet window holds more rounds of them. An empty list keeps
// -tracing's two paths (1 % and 100 %) and every path.
func tracingOnly(list string) (rates []string, keep func(path string) bool, err error) {
	if strings.TrimSpace(list) == "" {
		return []string{"0.01", "1"}, func(string) bool { return true }, nil
	}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !(f >= 0 && f <= 1) {
			return nil, nil, fmt.Errorf("-tracing-only %q: want sample rates in [0, 1], comma-separated", list)
		}
		rates = append(rates, s)
	}
	keep = func(path string) bool {
		return path == "one weft proxy" || path == "one weft proxy B" || strings.HasPrefix(path, "one weft proxy, tracing ")
	}
	return rates, keep, nil
}

// tracingPathName names the tracing path at rate ("0.01" is
// "one weft proxy, tracing 1%").
func tracingPathName(rate string) string {
	f, _ := strconv.ParseFloat(rate, 64)
	return "one weft proxy, tracing " + strconv.FormatFloat(f*100, 'f', -1, 64) + "%"
}

// tracingPaths starts the tracing paths, one per sample rate: the sidecar
// of "one weft proxy" (with the extra arguments args) exporting its spans
// over OTLP gRPC to the collector at otlp.
func (b *bench) tracingPaths(xds *xdsServer, app, otlp string, rates, args []string) []target {
	var targets []target
	for i, rate := range rates {
		node := fmt.Sprintf("mesh/bench/virtualNode/server-trace-%d", i)
		pT := freePort()
		xds.set(node, resources("ingress", pT, "cds_ingress_bench_server_http_9080", app, true))
		procT := b.startProxy(b.weft, node, xds.addr, append([]string{"--tracing", "otlp-grpc", "--tracing-endpoint", otlp, "--tracing-sample-rate", rate}, args...)...)
		waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pT))
		targets = append(targets, target{tracingPathName(rate), fmt.Sprintf("http://127.0.0.1:%d/", pT), []*os.Process{procT}, nil})
	}
	return targets
}
