package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

// The h2c paths (-h2c, or -only naming "h2c"): the same one- and two-hop
// shapes as the HTTP/1.1 paths, with HTTP/2 without TLS on every hop, as
// App Mesh configures a virtual node whose listener protocol is http2: the
// listener's connection manager keeps its automatic codec (HTTP/1.1 or an
// h2c preface), and the clusters to an http2 listener speak HTTP/2
// (http2_protocol_options, as internal/xds/translate's upstreamProtocol).
// haproxy does the same with "bind ... proto h2" and "server ... proto h2".
//
// The fixed-rate generator keeps the HTTP/1.1 one's method (latency from
// the scheduled send time): -conns workers share -h2c-conns HTTP/2
// connections, so at most -conns streams are in flight, -conns/-h2c-conns
// per connection. Saturation is h2load's (Debian nghttp2-client):
// -h2c-sat-conns connections with -h2c-sat-streams streams each.

// h2cSuffix ends the name of every h2c path.
const h2cSuffix = " h2c"

// isH2C reports whether the path named name speaks h2c, or HTTP/2 over
// mutual TLS (h2tls.go): both are measured the same way.
func isH2C(name string) bool {
	return strings.HasSuffix(name, h2cSuffix) || strings.HasSuffix(name, h2tlsSuffix)
}

// h1ToH2Suffix ends the name of the paths where an HTTP/1.1 client
// reaches the one-proxy h2c path's proxy, whose cluster speaks HTTP/2 to
// the app: App Mesh's http listener routing to an http2 or grpc virtual
// node. Measured with the HTTP/1.1 generators; added latency is against
// app direct (HTTP/1.1).
const h1ToH2Suffix = " h1 to h2"

// h2cWanted reports whether the h2c paths are set up: with -h2c, or when
// -only names one of them (app direct h2c is the HTTP/2-over-mutual-TLS
// paths' baseline too).
func h2cWanted(flagOn bool, only string) bool {
	return flagOn || strings.Contains(only, "h2c")
}

// h2cUpstreamH1 (-h2c-upstream-h1): the h2c paths' proxies speak
// HTTP/1.1 to their upstreams (the clusters without
// http2_protocol_options, haproxy's servers without "proto h2"): h2c on
// the client's hop only, the shape weft proxy --h2loops serves on its
// event loops (step 1).
var h2cUpstreamH1 bool

// h2cResources is resources with the cluster speaking HTTP/2 to its
// endpoints (HTTP/1.1 with -h2c-upstream-h1).
func h2cResources(prefix string, port int, clusterName, upstream string, static bool) []types.Resource {
	rs := resources(prefix, port, clusterName, upstream, static)
	if h2cUpstreamH1 {
		return rs
	}
	opts, _ := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})
	for _, r := range rs {
		if c, ok := r.(*clusterv3.Cluster); ok {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
		}
	}
	return rs
}

// h2cTargets starts the h2c paths: the app direct, one and two weft
// proxies (by bin, with args), one and two haproxies; with binB, one and
// two weft proxies B; and the one-proxy paths for HTTP/1.1 clients
// (h1ToH2Suffix).
func (b *bench) h2cTargets(x *xdsServer, app string, args []string, binB string, argsB []string) []target {
	url := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }
	appProc, _ := os.FindProcess(b.appPid)
	ts := []target{{"app direct" + h2cSuffix, "http://" + app + "/", []*os.Process{appProc}, nil}}
	weft := func(name, bin, node string, extra []string) {
		pIn, pOut := freePort(), freePort()
		x.set(node+"-server-h2c", h2cResources("ingress", pIn, "cds_ingress_bench_server_http2_9080", app, true))
		x.set(node+"-client-h2c", h2cResources("egress", pOut, "cds_egress_bench_server_http2_9080", fmt.Sprintf("127.0.0.1:%d", pIn), false))
		in := b.startProxy(bin, node+"-server-h2c", x.addr, extra...)
		out := b.startProxy(bin, node+"-client-h2c", x.addr, extra...)
		waitH2(url(pIn), nil)
		waitH2(url(pOut), nil)
		ts = append(ts,
			target{"one " + name + h2cSuffix, url(pIn), []*os.Process{in}, nil},
			target{"two " + strings.Replace(name, "proxy", "proxies", 1) + h2cSuffix, url(pOut), []*os.Process{out, in}, nil},
			// The same proxy for HTTP/1.1 clients: its listener takes both,
			// its cluster speaks HTTP/2 (h2c) to the app.
			target{"one " + name + h1ToH2Suffix, url(pIn), []*os.Process{in}, nil})
	}
	weft("weft proxy", b.weft, "mesh/bench/virtualNode/h2c", args)
	if binB != "" {
		weft("weft proxy B", binB, "mesh/bench/virtualNode/h2c-b", argsB)
	}
	pH, pH2 := freePort(), freePort()
	up := " proto h2"
	if h2cUpstreamH1 {
		up = ""
	}
	h1 := b.haproxy(pH, fmt.Sprintf("127.0.0.1:%d proto h2", pH), app+up)
	waitH2(url(pH), nil)
	// The second haproxy speaks h2 to the first, whose bind takes only h2.
	h2 := b.haproxy(pH2, fmt.Sprintf("127.0.0.1:%d proto h2", pH2), fmt.Sprintf("127.0.0.1:%d proto h2", pH))
	waitH2(url(pH2), nil)
	return append(ts,
		target{"haproxy" + h2cSuffix, url(pH), []*os.Process{h1}, nil},
		target{"two haproxies" + h2cSuffix, url(pH2), []*os.Process{h2, h1}, nil})
}

// h2cClients returns n HTTP/2-only clients without TLS (prior knowledge),
// or over TLS with tc (its NextProtos h2), each on a transport of its own, hence on a connection of its own while
// its streams fit the server's limit (golang.org/x/net/http2's pool dials
// once per address at a time; net/http's h2c transport dials whenever no
// connection is idle, which opened 6 or 7 instead of 4). dials counts the
// connections they open.
func h2cClients(n int, dials *atomic.Int64, tc *tls.Config) ([]*http.Client, func()) {
	var cs []*http.Client
	var ts []*http2.Transport
	for range n {
		var d net.Dialer
		t := &http2.Transport{AllowHTTP: true, DisableCompression: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				dials.Add(1)
				if tc != nil {
					return (&tls.Dialer{NetDialer: &d, Config: tc}).DialContext(ctx, network, addr)
				}
				return d.DialContext(ctx, network, addr)
			}}
		ts = append(ts, t)
		cs = append(cs, &http.Client{Transport: t, Timeout: 30 * time.Second})
	}
	return cs, func() {
		for _, t := range ts {
			t.CloseIdleConnections()
		}
	}
}

func waitH2(url string, tc *tls.Config) {
	var dials atomic.Int64
	cs, done := h2cClients(1, &dials, tc)
	defer done()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := cs[0].Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && resp.ProtoMajor == 2 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("%s never answered 200 over HTTP/2", url)
}

// constantRateH2C is constantRate over h2c (over TLS with tc): workers senders share
// h2cConns HTTP/2 connections (worker w uses connection w mod h2cConns),
// each request timed from its scheduled send time. dialed is how many
// connections the clients opened (h2cConns unless one was lost or a
// server's stream limit made the transport open another).
func constantRateH2C(url string, rate int, d time.Duration, workers, h2cConns int, tc *tls.Config) (lat []time.Duration, errs int, wall time.Duration, dialed int64) {
	var dials atomic.Int64
	clients, done := h2cClients(h2cConns, &dials, tc)
	defer done()
	lat, errs, wall = sendScheduled(url, rate, d, workers, func(w int) *http.Client { return clients[w%len(clients)] }, 2)
	return lat, errs, wall, dials.Load()
}

// h2loadResult is one h2load run's figures.
type h2loadResult struct {
	rps, mean, max, sd, failed string
}

var (
	reH2RPS  = regexp.MustCompile(`finished in [\d.]+\w+, ([\d.]+) req/s`)
	reH2Time = regexp.MustCompile(`time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)`)
	reH2Fail = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored`)
)

// h2load saturates url over h2c for d: conns connections with streams
// concurrent streams each, over two threads (as wrk -t2). h2load prints
// no percentiles, only min, max, mean and standard deviation.
func h2load(url string, d time.Duration, conns, streams int) h2loadResult {
	out, err := exec.Command("h2load", "-t2", "-c"+strconv.Itoa(conns), "-m"+strconv.Itoa(streams),
		"-D"+strconv.Itoa(max(1, int(d.Seconds()))), url).CombinedOutput()
	if err != nil {
		return h2loadResult{rps: "h2load failed: " + err.Error()}
	}
	r := h2loadResult{rps: "?", mean: "?", max: "?", sd: "?", failed: "?"}
	if m := reH2RPS.FindSubmatch(out); m != nil {
		r.rps = string(m[1])
	}
	if m := reH2Time.FindSubmatch(out); m != nil {
		r.max, r.mean, r.sd = string(m[2]), string(m[3]), string(m[4])
	}
	if m := reH2Fail.FindSubmatch(out); m != nil {
		r.failed = string(m[1]) + "+" + string(m[2])
	}
	return r
}

// h2cSaturation runs h2load on the h2c paths of run and returns the rows
// of its table, and into rps each path's requests/s.
func h2cSaturation(run []target, d time.Duration, conns, streams int, rps map[string]float64) []string {
	if _, err := exec.LookPath("h2load"); err != nil {
		return []string{"| (h2load not installed: apt-get install nghttp2-client) | | | | | |"}
	}
	var rows []string
	for _, t := range run {
		if !isH2C(t.name) {
			continue
		}
		if t.tls != nil {
			rows = append(rows, fmt.Sprintf("| %s | n/a (h2load has no client certificate) | | | | | |", t.name))
			continue
		}
		r := h2load(t.url, d, conns, streams)
		if v, err := strconv.ParseFloat(r.rps, 64); err == nil && r.failed == "0+0" {
			rps[t.name] = v
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s |", t.name, r.rps, r.mean, r.sd, r.max, r.failed, loadavg.OneMinute()))
	}
	return rows
}

// printH2CSaturation prints the h2load table.
func printH2CSaturation(rows []string, d time.Duration, conns, streams int) {
	if len(rows) == 0 {
		return
	}
	fmt.Printf("\nSaturation over h2c: h2load -t2 -c%d -m%d -D%d (%d streams in flight; h2load gives no percentiles):\n\n", conns, streams, max(1, int(d.Seconds())), conns*streams)
	fmt.Println("| path | requests/s | mean | sd | max | failed+errored | load |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, l := range rows {
		fmt.Println(l)
	}
}
