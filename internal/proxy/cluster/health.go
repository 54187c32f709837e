package cluster

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/proxy/strict"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

type hcKind uint8

const (
	hcHTTP hcKind = iota
	hcTCP
	hcGRPC
)

// healthCheck is one compiled active health check.
type healthCheck struct {
	kind               hcKind
	timeout, interval  time.Duration
	unhealthy, healthy int
	altPort            uint32
	host, path, method string
	h2                 bool
	expected           [][2]int64 // [start, end) status ranges
	send               []byte     // TCP
	receive            [][]byte   // TCP
	service, authority string     // gRPC
	grpcMeta           metadata.MD
}

func buildHealthCheck(hc *corev3.HealthCheck, path, clusterName string) (*healthCheck, error) {
	// The jitter and event-log fields change timing or logging only.
	if err := strict.Fields(hc, path, "timeout", "interval", "initial_jitter", "interval_jitter",
		"interval_jitter_percent", "unhealthy_threshold", "healthy_threshold", "alt_port",
		"reuse_connection", "http_health_check", "tcp_health_check", "grpc_health_check",
		"event_log_path", "always_log_health_check_failures", "always_log_health_check_success"); err != nil {
		return nil, err
	}
	h := &healthCheck{timeout: hc.GetTimeout().AsDuration(), interval: hc.GetInterval().AsDuration(),
		unhealthy: int(hc.GetUnhealthyThreshold().GetValue()), healthy: int(hc.GetHealthyThreshold().GetValue())}
	if h.timeout <= 0 || h.interval <= 0 {
		return nil, fmt.Errorf("%s: timeout and interval must be positive", path)
	}
	if hc.GetUnhealthyThreshold() == nil || hc.GetHealthyThreshold() == nil {
		return nil, fmt.Errorf("%s: unhealthy_threshold and healthy_threshold are required", path)
	}
	h.unhealthy, h.healthy = max(h.unhealthy, 1), max(h.healthy, 1)
	if p := hc.GetAltPort(); p != nil {
		h.altPort = p.GetValue()
	}
	switch x := hc.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		hh := x.HttpHealthCheck
		hp := path + ".http_health_check"
		if err := strict.Fields(hh, hp, "host", "path", "expected_statuses", "codec_client_type",
			"method", "request_headers_to_add"); err != nil {
			return nil, err
		}
		if len(hh.GetRequestHeadersToAdd()) > 0 {
			return nil, &strict.UnsupportedError{Path: hp, Field: "request_headers_to_add"}
		}
		h.kind, h.host, h.path = hcHTTP, hh.GetHost(), hh.GetPath()
		if h.host == "" {
			h.host = clusterName // Envoy's default
		}
		if h.path == "" {
			return nil, fmt.Errorf("%s: path is required", hp)
		}
		h.method = http.MethodGet
		if m := hh.GetMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED {
			h.method = m.String()
		}
		switch hh.GetCodecClientType() {
		case 0: // HTTP1
		case 1: // HTTP2
			h.h2 = true
		default:
			return nil, strict.Value(hp, "codec_client_type", hh.GetCodecClientType(), "HTTP1 or HTTP2 only")
		}
		for _, r := range hh.GetExpectedStatuses() {
			h.expected = append(h.expected, [2]int64{r.GetStart(), r.GetEnd()})
		}
		if len(h.expected) == 0 {
			h.expected = [][2]int64{{200, 201}}
		}
	case *corev3.HealthCheck_TcpHealthCheck_:
		th := x.TcpHealthCheck
		tp := path + ".tcp_health_check"
		if err := strict.Fields(th, tp, "send", "receive"); err != nil {
			return nil, err
		}
		h.kind = hcTCP
		var err error
		if th.GetSend() != nil {
			if h.send, err = payload(th.GetSend(), tp+".send"); err != nil {
				return nil, err
			}
		}
		for i, r := range th.GetReceive() {
			b, err := payload(r, strict.Join(tp, "receive", i))
			if err != nil {
				return nil, err
			}
			h.receive = append(h.receive, b)
		}
	case *corev3.HealthCheck_GrpcHealthCheck_:
		gh := x.GrpcHealthCheck
		gp := path + ".grpc_health_check"
		if err := strict.Fields(gh, gp, "service_name", "authority", "initial_metadata"); err != nil {
			return nil, err
		}
		h.kind, h.service, h.authority = hcGRPC, gh.GetServiceName(), gh.GetAuthority()
		if h.authority == "" {
			h.authority = clusterName
		}
		h.grpcMeta = metadata.MD{}
		for _, m := range gh.GetInitialMetadata() {
			h.grpcMeta.Append(m.GetHeader().GetKey(), m.GetHeader().GetValue())
		}
	default:
		return nil, fmt.Errorf("%s: weft proxy implements http, tcp and grpc health checks", path)
	}
	return h, nil
}

func payload(p *corev3.HealthCheck_Payload, path string) ([]byte, error) {
	if t := p.GetText(); t != "" {
		b, err := hex.DecodeString(t)
		if err != nil {
			return nil, fmt.Errorf("%s.text: not hex: %w", path, err)
		}
		return b, nil
	}
	return p.GetBinary(), nil
}

// healthLoop checks every host each interval, and new hosts at once.
func (c *Cluster) healthLoop(ctx context.Context) {
	defer c.wg.Done()
	hc := c.hc
	// A client per address checked over HTTP, its Transport's idle
	// connection closed when the address leaves the cluster: one
	// Transport for all can close the idle connections of every address
	// or of none, and has no idle timeout (a check reuses its connection
	// each interval).
	clients := map[string]*http.Client{}
	grpcConns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, cl := range clients {
			cl.CloseIdleConnections()
		}
		for _, cc := range grpcConns {
			_ = cc.Close()
		}
	}()
	t := time.NewTicker(hc.interval)
	defer t.Stop()
	for {
		hosts := c.Hosts()
		var wg sync.WaitGroup
		results := make([]bool, len(hosts))
		checked := make(map[string]bool, len(hosts))
		for i, h := range hosts {
			addr := h.Addr
			if hc.altPort != 0 {
				host, _, _ := net.SplitHostPort(addr)
				addr = net.JoinHostPort(host, strconv.Itoa(int(hc.altPort)))
			}
			checked[addr] = true
			var cc *grpc.ClientConn
			client := clients[addr]
			if hc.kind == hcHTTP && client == nil {
				client = &http.Client{Transport: c.hcTransport(), Timeout: hc.timeout,
					CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				clients[addr] = client
			}
			if hc.kind == hcGRPC {
				cc = grpcConns[addr]
				if cc == nil {
					var err error
					cc, err = grpc.NewClient("passthrough:///"+addr,
						grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(hc.authority),
						grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
							return c.dialHC(ctx, a, tlsctx.ALPNH2)
						}))
					if err == nil {
						grpcConns[addr] = cc
					}
				}
			}
			wg.Add(1)
			go func() { // one check; waited for below before the next round
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, hc.timeout)
				defer cancel()
				results[i] = c.checkOnce(cctx, client, cc, addr)
			}()
		}
		wg.Wait()
		// The connections of hosts no longer in the cluster: each kept its
		// goroutines and redialled its old address for good.
		for addr, cc := range grpcConns {
			if !checked[addr] {
				_ = cc.Close()
				delete(grpcConns, addr)
			}
		}
		for addr, cl := range clients {
			if !checked[addr] {
				cl.CloseIdleConnections()
				delete(clients, addr)
			}
		}
		if ctx.Err() != nil {
			return
		}
		for i, h := range hosts {
			h.checked.Store(true)
			c.Stats.hcAttempt.Inc()
			if results[i] {
				c.Stats.hcSuccess.Inc()
				h.hcFails = 0
				h.hcPasses++
				if h.flags.Load()&failedActiveHC != 0 && (h.flags.Load()&pendingActiveHC != 0 || h.hcPasses >= hc.healthy) {
					h.setFlag(failedActiveHC|pendingActiveHC, false)
					c.log.Info("host passed health checks", "host", h.Addr)
				}
			} else {
				c.Stats.hcFail.Inc()
				h.hcPasses = 0
				h.hcFails++
				if h.flags.Load()&failedActiveHC == 0 && h.hcFails >= hc.unhealthy {
					h.setFlag(failedActiveHC, true)
					c.log.Warn("host failed health checks", "host", h.Addr)
				}
				h.setFlag(pendingActiveHC, false)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.hostWake:
		}
	}
}

func (c *Cluster) hcTransport() *http.Transport {
	p := new(http.Protocols)
	alpn := tlsctx.ALPNHTTP11
	if c.hc.h2 {
		p.SetUnencryptedHTTP2(true)
		alpn = tlsctx.ALPNH2
	} else {
		p.SetHTTP1(true)
	}
	return &http.Transport{Protocols: p, DisableCompression: true, MaxIdleConnsPerHost: 4,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return c.dialHC(ctx, addr, alpn) }}
}

func (c *Cluster) checkOnce(ctx context.Context, client *http.Client, cc *grpc.ClientConn, addr string) bool {
	hc := c.hc
	switch hc.kind {
	case hcHTTP:
		req, err := http.NewRequestWithContext(ctx, hc.method, "http://"+addr+hc.path, nil)
		if err != nil {
			return false
		}
		req.Host = hc.host
		req.Header.Set("User-Agent", "Envoy/HC")
		resp, err := client.Do(req)
		if err != nil {
			c.Stats.hcNetFail.Inc()
			return false
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		for _, r := range hc.expected {
			if int64(resp.StatusCode) >= r[0] && int64(resp.StatusCode) < r[1] {
				return true
			}
		}
		return false
	case hcTCP:
		conn, err := c.dialHC(ctx, addr, tlsctx.ALPNConfigured)
		if err != nil {
			c.Stats.hcNetFail.Inc()
			return false
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		if len(hc.send) > 0 {
			if _, err := conn.Write(hc.send); err != nil {
				return false
			}
		}
		if len(hc.receive) == 0 {
			return true
		}
		want := bytes.Join(hc.receive, nil)
		got := make([]byte, 0, len(want))
		buf := make([]byte, 4096)
		for len(got) < len(want) {
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if bytes.Contains(got, want) {
				return true
			}
			if err != nil {
				return false
			}
		}
		return bytes.Contains(got, want)
	default:
		if cc == nil {
			return false
		}
		if len(hc.grpcMeta) > 0 {
			ctx = metadata.NewOutgoingContext(ctx, hc.grpcMeta)
		}
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: hc.service})
		if err != nil {
			c.Stats.hcNetFail.Inc()
			return false
		}
		return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}
}
