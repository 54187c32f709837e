package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

const testNode = "mesh/test-mesh/virtualNode/test-node"

// harness is one weft proxy fed by a real go-control-plane server.
type harness struct {
	t   testing.TB
	xds *xdstest.Server
	p   *Proxy
}

func newHarness(t testing.TB, opts ...func(*Config)) *harness {
	t.Helper()
	return newHarnessWith(t, func(c *Config) {
		for _, o := range opts {
			o(c)
		}
	})
}

// newHarnessWith is newHarness with a changed proxy configuration.
func newHarnessWith(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	xds := xdstest.Start(t, testNode)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("WEFT_PROXY_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// State of the world: the tests wait for every type's ACK of each
	// version they set (xdstest.WaitACK), which delta does not send for a
	// type whose resources did not change. Delta is tested in xdsclient
	// and against weft server (internal/xds/server).
	cfg := Config{ResourceARN: testNode, XDS: xds.Addr, XDSProtocol: xdsclient.ProtocolSotW, AdminAddr: "127.0.0.1:0", XDSBackoffBase: 20 * time.Millisecond}
	// The listeners the event loops can serve are served by them, as
	// weft proxy's default; WEFT_PROXY_TEST_EVLOOP=0 runs the tests with
	// --evloop=false, every listener on the goroutine path.
	cfg.Goroutines = os.Getenv("WEFT_PROXY_TEST_EVLOOP") == "0"
	// h2c on the loops too, as weft proxy's default; WEFT_PROXY_TEST_H2LOOPS=0
	// hands every h2c connection to the goroutine path (--h2loops=false).
	cfg.H2Goroutines = os.Getenv("WEFT_PROXY_TEST_H2LOOPS") == "0"
	mod(&cfg)
	p, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }() // ends with cancel in Cleanup
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("proxy Run did not return within 10s of cancel")
		}
	})
	if !cfg.Goroutines && runtime.GOOS == "linux" {
		t.Cleanup(func() { // before the proxy stops: which listeners the loops served
			p.mu.Lock()
			defer p.mu.Unlock()
			var on, off []string
			var handed, overTLS, h2, h2up int64
			for name, l := range p.listeners {
				if l.OnLoops() {
					on, handed, overTLS, h2 = append(on, name), handed+l.HandedOff(), overTLS+l.LoopTLSConns(), h2+l.LoopH2Conns()
					h2up += l.LoopH2UpstreamStreams()
				} else {
					off = append(off, name)
				}
			}
			t.Logf("evloop: listeners on the loops %v (%d connections handed off, %d served over TLS, %d h2c on the loops, %d streams to HTTP/2 upstreams), off %v", on, handed, overTLS, h2, h2up, off)
		})
	}
	waitUntil(t, 10*time.Second, "the admin listener", func() bool { return p.AdminAddr() != "" })
	return &harness{t: t, xds: xds, p: p}
}

// push publishes resources and waits until the proxy ACKs the version for
// every type pushed.
func (h *harness) push(rs ...types.Resource) string {
	h.t.Helper()
	v := h.xds.Set(rs...)
	seen := map[string]bool{}
	for _, r := range rs {
		url := "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName())
		if !seen[url] {
			seen[url] = true
			h.xds.WaitACK(url, v)
		}
	}
	return v
}

// addr returns the bound address of a listener.
func (h *harness) addr(listener string) string {
	h.t.Helper()
	a := h.p.ListenerAddr(listener)
	if a == "" {
		h.t.Fatalf("listener %s is not bound", listener)
	}
	return a
}

func (h *harness) admin(path string) string {
	h.t.Helper()
	resp, err := http.Get("http://" + h.p.AdminAddr() + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (h *harness) stat(name string) int64 {
	v, _ := h.p.Stats.Value(name)
	return v
}

// counts reads the counters prefix+name, one "name value" line each, in
// the order of names, for a test to compare across paths.
func (h *harness) counts(prefix string, names []string) string {
	var lines []string
	for _, n := range names {
		lines = append(lines, fmt.Sprintf("%s %d", n, h.stat(prefix+n)))
	}
	return strings.Join(lines, "\n")
}

// countsBy reads the counters root.label.name for each label and name, one
// "label.name value" line each, labels first.
func (h *harness) countsBy(root string, labels, names []string) string {
	var lines []string
	for _, l := range labels {
		for _, n := range names {
			lines = append(lines, fmt.Sprintf("%s.%s %d", l, n, h.stat(root+"."+l+"."+n)))
		}
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls cond until it holds or fails the test at the deadline;
// for state only visible through polling (stats, files).
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

var adsSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}

func httpManager(prefix string, rds string, mod ...func(*hcmv3.HttpConnectionManager)) *hcmv3.HttpConnectionManager {
	m := &hcmv3.HttpConnectionManager{StatPrefix: prefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource, RouteConfigName: rds}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}},
	}
	for _, f := range mod {
		f(m)
	}
	return m
}

func withAccessLog(path string, format *corev3.SubstitutionFormatString) func(*hcmv3.HttpConnectionManager) {
	return func(m *hcmv3.HttpConnectionManager) {
		m.AccessLog = append(m.AccessLog, fileLog(path, format))
	}
}

func fileLog(path string, format *corev3.SubstitutionFormatString) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: path}
	if format != nil {
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: format}
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(fl)}}
}

func socketAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// httpListener listens on 127.0.0.1 with one HCM chain.
func httpListener(name string, m *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, Address: socketAddr("127.0.0.1", 0),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)}}}}}}
}

func tcpListener(name string, t *tcpv3.TcpProxy) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, Address: socketAddr("127.0.0.1", 0),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t)}}}}}}
}

func routeTo(prefix, cluster string) *routev3.Route {
	return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

func vhost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func routeConfig(name string, vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhs}
}

func edsCluster(name string, mod ...func(*clusterv3.Cluster)) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource}}
	for _, f := range mod {
		f(c)
	}
	return c
}

func staticCluster(name string, addrs ...string) *clusterv3.Cluster {
	la := cla(name, addrs...)
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}, LoadAssignment: la}
}

func cla(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddr(host, uint32(p))}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// backend is a real HTTP server that answers with its name and what it
// received, and can be told to fail.
type backend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
	fail int // answer this status (if non-zero) ...
	left int // ... this many more times (-1: always)
	slow time.Duration
}

type echo struct {
	Backend string
	Path    string
	Host    string
	Header  http.Header
}

func newBackend(t testing.TB, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		b.mu.Lock()
		b.hits++
		status := 0
		if b.fail != 0 && b.left != 0 {
			status = b.fail
			if b.left > 0 {
				b.left--
			}
		}
		slow := b.slow
		b.mu.Unlock()
		if slow > 0 {
			select {
			case <-time.After(slow):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Remove-Me", "yes")
		if status != 0 {
			w.WriteHeader(status)
			fmt.Fprintf(w, "%s failing", name)
			return
		}
		_ = json.NewEncoder(w).Encode(echo{Backend: name, Path: r.URL.RequestURI(), Host: r.Host, Header: r.Header})
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

func (b *backend) set(fail, times int) {
	b.mu.Lock()
	b.fail, b.left = fail, times
	b.mu.Unlock()
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// get sends a request through the proxy listener at addr with Host host.
func get(t *testing.T, c *http.Client, addr, host, path string, hdr ...string) (*http.Response, echo, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e echo
	_ = json.Unmarshal(b, &e)
	return resp, e, string(b)
}

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

var _ = xdsclient.ListenerType

type xdstestRequest = xdstest.Request

func wrapBool(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }
