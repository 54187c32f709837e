package httpconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// referenceForward is the forwarding path weft proxy had before its own
// forwarder: net/http/httputil's ReverseProxy with the HCM's hooks. The
// forwarder must look the same to clients.
func referenceForward(m *HCM) func(http.ResponseWriter, *stream) {
	return func(w http.ResponseWriter, s *stream) {
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				// ReverseProxy drops the client's X-Forwarded-* and
				// Forwarded; Envoy keeps them unless Connection names
				// Forwarded (naming the others refuses the request).
				for _, k := range [...]string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
					named := false
					for _, c := range pr.In.Header["Connection"] {
						named = named || route.ConnectionNames(c, k)
					}
					if v, ok := pr.In.Header[k]; ok && !named {
						pr.Out.Header[k] = slices.Clone(v)
					}
				}
				m.rewrite(s, pr.Out)
			},
			Transport:      rtFunc(s.roundTrip),
			ModifyResponse: func(res *http.Response) error { m.modifyResponse(s, res); return nil },
			ErrorHandler:   func(w http.ResponseWriter, _ *http.Request, err error) { m.errorHandler(w, s, err) },
			BufferPool:     bufPool,
			ErrorLog:       log.New(io.Discard, "", 0),
		}
		rp.ServeHTTP(w, s.in.WithContext(s.ctx))
		if s.in.ProtoMajor == 1 && w.(*respWriter).code != http.StatusSwitchingProtocols && s.bodyBroke.Load() {
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type fwdClusters map[string]*cluster.Cluster

func (c fwdClusters) Get(name string) *cluster.Cluster { return c[name] }

// fwdProxy is an HCM serving real connections, forwarding with fwd (nil:
// the forwarder).
type fwdProxy struct {
	ln net.Listener
	m  *HCM
}

func startFwdProxy(t *testing.T, upstream string, reference, h2up bool) *fwdProxy {
	t.Helper()
	host, port, _ := net.SplitHostPort(upstream)
	p, _ := strconv.Atoi(port)
	st := stats.NewStore()
	discard := slog.New(slog.DiscardHandler)
	var h2opts *corev3.Http2ProtocolOptions
	if h2up {
		h2opts = &corev3.Http2ProtocolOptions{}
	}
	c, err := cluster.Build(&clusterv3.Cluster{Name: "up", Http2ProtocolOptions: h2opts, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "up", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}}}}}}}, st, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	toUp := func(prefix string, mod func(*routev3.RouteAction)) *routev3.Route {
		a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "up"}}
		if mod != nil {
			mod(a)
		}
		return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action: &routev3.Route_Route{Route: a}}
	}
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{
		toUp("/slow", func(a *routev3.RouteAction) { a.Timeout = durationpb.New(200 * time.Millisecond) }),
		toUp("/flaky", func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
		}),
		toUp("/", nil),
	}}}}
	router, _ := anypb.New(&routerv3.Router{})
	srv := NewServer(discard, Options{ParkIdleAfter: time.Nanosecond})
	m, err := Build(&hcmv3.HttpConnectionManager{StatPrefix: "fwd",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}},
		"hcm", Deps{Clusters: fwdClusters{"up": c}, Stats: st, Server: srv, Log: discard})
	if err != nil {
		t.Fatal(err)
	}
	if reference {
		m.forwardWith = referenceForward(m)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }() // ends with cancel in Cleanup, once every connection is gone
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // accept loop; ends when ln is closed in Cleanup
		defer wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			src, _ := netip.ParseAddrPort(raw.RemoteAddr().String())
			dst, _ := netip.ParseAddrPort(raw.LocalAddr().String())
			wg.Add(1)
			go func() { // one connection; ends when the HCM is done with it
				defer wg.Done()
				m.ServeConn(ctx, &listener.Conn{Conn: raw, Src: src, Dst: dst, Chain: &listener.Chain{Handler: m}})
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		cancel()
		select {
		case <-runDone:
		case <-time.After(10 * time.Second):
			t.Error("the server's Run did not return")
		}
		wg.Wait()
	})
	return &fwdProxy{ln: ln, m: m}
}

// seen is a response as a client sees it, without what differs between
// any two responses (dates, measured times, generated IDs).
type seen struct {
	informational []string
	status        int
	header        []string
	body          string
	bodyErr       bool
	trailer       []string
	err           bool
}

func (s seen) String() string {
	return fmt.Sprintf("1xx %v\nstatus %d err %v\nheader %q\nbody %q bodyErr %v\ntrailer %q",
		s.informational, s.status, s.err, s.header, s.body, s.bodyErr, s.trailer)
}

func flat(h http.Header) []string {
	var out []string
	for k, vv := range h {
		switch k {
		case "Date", "X-Envoy-Upstream-Service-Time", "X-Request-Id":
			continue
		case "Trailer":
			// Announced in any order.
			var names []string
			for _, v := range vv {
				for n := range strings.SplitSeq(v, ",") {
					names = append(names, textproto.TrimString(n))
				}
			}
			slices.Sort(names)
			vv = names
		}
		out = append(out, k+": "+strings.Join(vv, " | "))
	}
	slices.Sort(out)
	return out
}

type fwdCase struct {
	name   string
	method string
	path   string
	header map[string]string
	body   string
	// chunked sends the body without a length.
	chunked bool
	// sse reads a server-sent event stream, telling the backend when the
	// first event arrived.
	sse bool
	// h1only: the case cannot be sent over HTTP/2 (connection-specific
	// headers).
	h1only bool
	// h1up: the backend's behaviour needs HTTP/1.1 (a Connection header
	// in its response, a hijacked connection).
	h1up bool
	// sentOn: the response is cut after part of its body. The forwarder
	// sends the head and what came on before the cut, as Envoy sends
	// each read on; ReverseProxy, over HTTP/2, keeps a body of known
	// length in x/net's buffer, which the reset drops: over HTTP/2 the
	// forwarder's answer is checked alone (want).
	sentOn bool
	// envoyOnly: the forwarder does as Envoy does where ReverseProxy does
	// not (a query with ';' separators or malformed escapes, which
	// ReverseProxy re-encodes, sent as received): its answer is checked
	// alone (want).
	envoyOnly bool
	want      func(t *testing.T, s seen) // what both paths must show, beyond being equal
}

func (b *fwdBackend) do(t *testing.T, c *http.Client, base string, tc fwdCase, key string) seen {
	t.Helper()
	defer c.CloseIdleConnections()
	var s seen
	var body io.Reader
	if tc.body != "" {
		body = strings.NewReader(tc.body)
		if tc.chunked {
			body = io.MultiReader(body) // hides the length
		}
	}
	method := tc.method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		s.informational = append(s.informational, fmt.Sprintf("%d %v", code, flat(http.Header(h))))
		return nil
	}})
	req, err := http.NewRequestWithContext(ctx, method, base+tc.path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = ""
	for k, v := range tc.header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Try-Key", key)
	if req.Host == "" || strings.HasPrefix(req.Host, "127.") {
		req.Host = "svc.example"
	}
	res, err := c.Do(req)
	if err != nil {
		s.err = true
		t.Logf("request: %v", err)
		return s
	}
	defer res.Body.Close()
	s.status = res.StatusCode
	s.header = flat(res.Header)
	var got []byte
	if tc.sse {
		br := bufio.NewReader(res.Body)
		var first []byte
		for !strings.HasSuffix(string(first), "\n\n") {
			line, err := br.ReadBytes('\n')
			first = append(first, line...)
			if err != nil {
				break
			}
		}
		select {
		case b.sseRead <- struct{}{}:
		default: // the backend gave up waiting
		}
		rest, err := io.ReadAll(br)
		got = append(first, rest...)
		s.bodyErr = err != nil
	} else {
		got, err = io.ReadAll(res.Body)
		s.bodyErr = err != nil
	}
	s.body = string(got)
	s.trailer = flat(res.Trailer)
	return s
}

// TestForwarderMatchesReverseProxy sends the same requests through the
// forwarder and through httputil.ReverseProxy with the same hooks, over
// HTTP/1.1 and h2c, to HTTP/1.1 and h2c upstreams, and compares what the
// client receives: the same, but for the 1xx responses the forwarder
// drops.
func TestForwarderMatchesReverseProxy(t *testing.T) {
	be := startFwdBackend(t)
	ours := startFwdProxy(t, be.ln.Addr().String(), false, false)
	ref := startFwdProxy(t, be.ln.Addr().String(), true, false)
	ours2 := startFwdProxy(t, be.ln.Addr().String(), false, true)
	ref2 := startFwdProxy(t, be.ln.Addr().String(), true, true)
	status := func(code int) func(*testing.T, seen) {
		return func(t *testing.T, s seen) {
			if s.status != code {
				t.Errorf("status %d, want %d", s.status, code)
			}
		}
	}
	cases := []fwdCase{
		{name: "get", path: "/echo?a=1&b=2", want: status(200)},
		{name: "query as received", path: "/echo?a=1;b=2&c=%zz&d=%41", envoyOnly: true, want: func(t *testing.T, s seen) {
			if !strings.Contains(s.body, "GET /echo?a=1;b=2&c=%zz&d=%41 ") {
				t.Errorf("query not sent as received: %s", s.body)
			}
		}},
		// (A Connection header naming X-Forwarded-For is refused before
		// routing, as Envoy's codec refuses it: TestHTTP1HeadSamePaths.)
		{name: "hop-by-hop", h1only: true, h1up: true, path: "/hop", header: map[string]string{
			"Connection": "X-Conn-Listed", "X-Conn-Listed": "1", "Keep-Alive": "timeout=5",
			"Proxy-Authorization": "Basic x", "Te": "trailers, deflate", "X-Forwarded-For": "10.0.0.1", "Forwarded": "for=x",
			"Proxy-Connection": "keep-alive"},
			want: func(t *testing.T, s seen) {
				for _, bad := range []string{"X-Conn-Listed", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "deflate"} {
					if strings.Contains(s.body, bad) {
						t.Errorf("%s reached the upstream: %s", bad, s.body)
					}
				}
				for _, good := range []string{`Te: ["trailers"]`, `X-Forwarded-For: ["10.0.0.1"]`, `Forwarded: ["for=x"]`} {
					if !strings.Contains(s.body, good) {
						t.Errorf("%s missing upstream: %s", good, s.body)
					}
				}
				for _, h := range s.header {
					if strings.HasPrefix(h, "X-Conn-Listed") || strings.HasPrefix(h, "Proxy-Authenticate") {
						t.Errorf("hop-by-hop response header %s reached the client", h)
					}
				}
			}},
		{name: "forwarded headers, te", path: "/hop", header: map[string]string{
			"Te": "trailers", "X-Forwarded-For": "10.0.0.1", "Forwarded": "for=x"},
			want: func(t *testing.T, s seen) {
				for _, good := range []string{`Te: ["trailers"]`, `X-Forwarded-For: ["10.0.0.1"]`, `Forwarded: ["for=x"]`} {
					if !strings.Contains(s.body, good) {
						t.Errorf("%s missing upstream: %s", good, s.body)
					}
				}
			}},
		{name: "no user agent", path: "/echo", header: map[string]string{"User-Agent": ""}},
		{name: "sized body", method: "POST", path: "/echo", body: strings.Repeat("x", 50<<10)},
		{name: "chunked body", method: "POST", path: "/echo", body: strings.Repeat("y", 70<<10), chunked: true},
		{name: "expect 100-continue", method: "PUT", path: "/echo", body: "continued", header: map[string]string{"Expect": "100-continue"}},
		{name: "head", method: "HEAD", path: "/head", want: status(200)},
		{name: "chunked response", path: "/chunked", want: func(t *testing.T, s seen) {
			if s.body != "part 0\npart 1\npart 2\n" {
				t.Errorf("body %q", s.body)
			}
		}},
		{name: "trailers", path: "/trailers", header: map[string]string{"Te": "trailers"}, want: func(t *testing.T, s seen) {
			if len(s.trailer) != 3 {
				t.Errorf("trailers %q", s.trailer)
			}
		}},
		// ReverseProxy relays the 103; the forwarder drops it (below).
		{name: "early hints", path: "/early", want: func(t *testing.T, s seen) {
			if s.status != 200 || s.body != "after early hints" {
				t.Errorf("%d %q", s.status, s.body)
			}
		}},
		{name: "event stream", path: "/sse", sse: true, want: func(t *testing.T, s seen) {
			if !strings.HasPrefix(s.body, "data: 1\n\ndata: 2\n\n") {
				t.Errorf("the first event was not flushed: %q", s.body)
			}
		}},
		{name: "cut mid-body", path: "/cut", sentOn: true, want: func(t *testing.T, s seen) {
			if !s.bodyErr && !s.err {
				t.Error("a cut response read as complete")
			}
			if s.status != 200 || s.body != "only ten b" {
				t.Errorf("status %d, body %q: want the head and what came before the cut", s.status, s.body)
			}
		}},
		{name: "cut chunked", path: "/cutchunked", want: func(t *testing.T, s seen) {
			if !s.bodyErr && !s.err {
				t.Error("a cut response read as complete")
			}
		}},
		{name: "upstream reset", h1up: true, path: "/reset", want: status(503)},
		{name: "timeout", path: "/slow", want: status(504)},
		{name: "retries", method: "POST", path: "/flaky", body: "again", want: func(t *testing.T, s seen) {
			if s.status != 200 || s.body != `try 3 body "again"` {
				t.Errorf("%d %q", s.status, s.body)
			}
		}},
		{name: "options, other host", method: "OPTIONS", path: "/echo", header: map[string]string{"Host": "other.example"}},
	}
	h2 := func() *http.Client {
		return &http.Client{Transport: &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}}
	}
	h1 := func() *http.Client {
		return &http.Client{Transport: &http.Transport{DisableCompression: true}}
	}
	for _, proto := range []struct {
		name      string
		client    func() *http.Client
		ours, ref *fwdProxy
		h2up      bool
	}{{"HTTP/1.1", h1, ours, ref, false}, {"h2c", h2, ours, ref, false}, {"HTTP/1.1 to h2c", h1, ours2, ref2, true}, {"h2c to h2c", h2, ours2, ref2, true}} {
		for _, tc := range cases {
			if tc.h1only && !strings.HasPrefix(proto.name, "HTTP/1.1") || tc.h1up && proto.h2up {
				continue
			}
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				a := be.do(t, proto.client(), "http://"+proto.ours.ln.Addr().String(), tc, "ours "+proto.name+tc.name)
				b := be.do(t, proto.client(), "http://"+proto.ref.ln.Addr().String(), tc, "ref "+proto.name+tc.name)
				// The forwarder drops an upstream's 1xx responses, as Envoy
				// does without proxy_100_continue; ReverseProxy relays them.
				// A 100 is the server's answer to Expect: 100-continue.
				for _, i := range a.informational {
					if !strings.HasPrefix(i, "100 ") {
						t.Errorf("the forwarder relayed %q", i)
					}
				}
				b.informational = slices.DeleteFunc(b.informational, func(i string) bool { return !strings.HasPrefix(i, "100 ") })
				if a.String() != b.String() && !(tc.sentOn && strings.HasPrefix(proto.name, "h2c")) && !tc.envoyOnly {
					t.Errorf("the forwarder:\n%s\nReverseProxy:\n%s", a, b)
				}
				if tc.want != nil {
					tc.want(t, a)
				}
			})
		}
	}
}

// TestForwarderWebSocket upgrades a connection through both paths and
// compares what the client reads.
func TestForwarderWebSocket(t *testing.T) {
	be := startFwdBackend(t)
	run := func(p *fwdProxy) string {
		c, err := net.Dial("tcp", p.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "ping\n")
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after the upgrade: %v", err)
		}
		rest, _ := io.ReadAll(br)
		return fmt.Sprintf("%d %v %q %q", res.StatusCode, flat(res.Header), line, rest)
	}
	a := run(startFwdProxy(t, be.ln.Addr().String(), false, false))
	b := run(startFwdProxy(t, be.ln.Addr().String(), true, false))
	if a != b {
		t.Errorf("the forwarder: %s\nReverseProxy: %s", a, b)
	}
	if !strings.HasPrefix(a, "101 ") || !strings.Contains(a, `"echo ping\n"`) {
		t.Errorf("upgrade: %s", a)
	}
}
