package main

import (
	"fmt"
	"os"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
)

// The HTTP/2-over-mutual-TLS paths (-h2-mtls, or -only naming "h2
// mTLS"): App Mesh's sidecars for an http2 or grpc virtual node with TLS
// on: "one ... h2 mTLS" is the server's sidecar, the generator speaking
// HTTP/2 over mutual TLS to it (ALPN h2, the client sidecar's
// certificate) and the proxy h2c to the app; "two ... h2 mTLS" puts the
// client's sidecar in front, the generator speaking h2c to it and that
// sidecar HTTP/2 over mutual TLS to the first (the cluster's client
// certificate, the server's SPIFFE ID checked, ALPN h2). haproxy does the
// same: "bind ... ssl ... verify required alpn h2" and "server ... ssl
// ... alpn h2". They are measured as the h2c paths are (isH2C): the
// fixed-rate generator over HTTP/2 connections, added latency against
// app direct h2c, saturation by h2load on the two-proxy paths (h2load
// presents no client certificate: the one-proxy rows say n/a).

// h2tlsSuffix ends the name of every HTTP/2-over-mutual-TLS path.
const h2tlsSuffix = " h2 mTLS"

// h2tlsWanted reports whether the HTTP/2-over-mutual-TLS paths are set
// up: with -h2-mtls, or when -only names one of them.
func h2tlsWanted(flagOn bool, only string) bool {
	return flagOn || strings.Contains(only, "h2 mTLS")
}

// withH2ALPN makes the listener's TLS (withMTLS's) offer ALPN h2, then
// http/1.1: what an HTTP/2 client over TLS needs (Go's and h2load's
// refuse a server that chose none).
func withH2ALPN(rs []types.Resource) []types.Resource {
	for _, r := range rs {
		l, ok := r.(*listenerv3.Listener)
		if !ok || l.FilterChains[0].TransportSocket == nil {
			continue
		}
		d := &tlsv3.DownstreamTlsContext{}
		if err := l.FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(d); err != nil {
			continue
		}
		d.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
		a, _ := anypb.New(d)
		l.FilterChains[0].TransportSocket = socket(a)
	}
	return rs
}

// h2tlsTargets starts the HTTP/2-over-mutual-TLS paths: one and two weft
// proxies (by bin, with args), with binB one and two weft proxies B, one
// and two haproxies.
func (b *bench) h2tlsTargets(x *xdsServer, k *pki, app string, args []string, binB string, argsB []string) []target {
	tc := k.clientTLS()
	tc.NextProtos = []string{"h2"}
	var ts []target
	weft := func(name, bin, node string, extra []string) {
		pIn, pOut := freePort(), freePort()
		x.set(node+"-server", withH2ALPN(k.withMTLS(h2cResources("ingress", pIn, "cds_ingress_bench_server_http2_9080", app, true), true, false)))
		x.set(node+"-client", k.withMTLS(h2cResources("egress", pOut, "cds_egress_bench_server_http2_9080", fmt.Sprintf("127.0.0.1:%d", pIn), false), false, true))
		in := b.startProxy(bin, node+"-server", x.addr, extra...)
		out := b.startProxy(bin, node+"-client", x.addr, extra...)
		waitH2(fmt.Sprintf("https://127.0.0.1:%d/", pIn), tc)
		waitH2(fmt.Sprintf("http://127.0.0.1:%d/", pOut), nil)
		ts = append(ts,
			target{"one " + name + h2tlsSuffix, fmt.Sprintf("https://127.0.0.1:%d/", pIn), []*os.Process{in}, tc},
			target{"two " + strings.Replace(name, "proxy", "proxies", 1) + h2tlsSuffix, fmt.Sprintf("http://127.0.0.1:%d/", pOut), []*os.Process{out, in}, nil})
	}
	weft("weft proxy", b.weft, "mesh/bench/virtualNode/h2tls", args)
	if binB != "" {
		weft("weft proxy B", binB, "mesh/bench/virtualNode/h2tls-b", argsB)
	}
	pH, pH2 := freePort(), freePort()
	up := " proto h2"
	if h2cUpstreamH1 {
		up = ""
	}
	h1 := b.haproxy(pH, fmt.Sprintf("127.0.0.1:%d ssl crt %s ca-file %s verify required alpn h2", pH, k.serverPEM, k.ca), app+up)
	waitH2(fmt.Sprintf("https://127.0.0.1:%d/", pH), tc)
	h2 := b.haproxy(pH2, fmt.Sprintf("127.0.0.1:%d proto h2", pH2),
		fmt.Sprintf("127.0.0.1:%d ssl verify required ca-file %s crt %s sni str(%s) alpn h2", pH, k.ca, k.clientPEM, serverSNI))
	waitH2(fmt.Sprintf("http://127.0.0.1:%d/", pH2), nil)
	return append(ts,
		target{"haproxy" + h2tlsSuffix, fmt.Sprintf("https://127.0.0.1:%d/", pH), []*os.Process{h1}, tc},
		target{"two haproxies" + h2tlsSuffix, fmt.Sprintf("http://127.0.0.1:%d/", pH2), []*os.Process{h2, h1}, nil})
}
