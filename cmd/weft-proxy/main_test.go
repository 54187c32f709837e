package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

const node = "mesh/m/virtualNode/n"

// started is weft proxy's start-up log line; it names the bound admin address.
var started = regexp.MustCompile(`msg="weft proxy started".* admin=(127\.0\.0\.1:[0-9]+)`)

// build builds cmd/weft-proxy into a directory removed when t ends, with
// the release builds' tags (scripts/release.sh), so that what ships is
// what runs here.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "weft-proxy")
	// Bounded: a cold module cache must fail the test, not hang it.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-tags", "grpcnotrace", "-o", bin, "github.com/weftmesh/weft/cmd/weft-proxy").CombinedOutput(); err != nil {
		t.Fatalf("go build weft-proxy: %v\n%s", err, out)
	}
	return bin
}

// TestBinary runs the built weft-proxy as weft proxy is run (`proxy` first,
// App Mesh's variables): it takes its configuration from a go-control-plane
// ADS server, forwards a request to the app, and ends on SIGTERM with
// status 0. Unknown commands exit 2; -h exits 0 with the usage; intercept
// is weft intercept.
func TestBinary(t *testing.T) {
	bin := build(t)

	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "usage: weft-proxy [proxy] [flags]") {
		t.Errorf("weft-proxy -h: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "server").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `unknown command "server"`) {
		t.Errorf("weft-proxy server: %v\n%s", err, out)
	}

	// weft intercept's command, refusing a bad flag before it touches iptables.
	out, err = exec.Command(bin, "intercept", "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "usage: weft-proxy intercept [flags]") {
		t.Errorf("weft-proxy intercept -h: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "intercept", "--app-ports", "http").CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "--app-ports") {
		t.Errorf("weft-proxy intercept --app-ports http: %v\n%s", err, out)
	}

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s %s", r.Method, r.URL.Path)
	}))
	defer app.Close()
	xds := xdstest.Start(t, node)
	// The admin listener on an ephemeral port, which the start-up log line
	// names; stderr through a pipe of our own, read to its end here.
	cmd := exec.Command(bin, "proxy", "--admin-addr", "127.0.0.1:0", "--xds-protocol", "sotw", "--concurrency", "1", "--log-level", "info")
	cmd.Env = append(cmd.Environ(), "APPMESH_RESOURCE_ARN="+node, "APPMESH_XDS_ENDPOINT="+xds.Addr)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	adminc := make(chan string, 1)
	var logged []string // the process's stderr, complete once logDone is closed
	logDone := make(chan struct{})
	go func() { // ends at EOF, when the process has exited
		defer close(logDone)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if len(logged) < 200 {
				logged = append(logged, sc.Text())
			}
			if m := started.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case adminc <- m[1]:
				default: // one start-up line; never block the reader
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when the process does (SIGTERM below, SIGKILL on failure)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		<-logDone
		if t.Failed() {
			t.Logf("weft-proxy stderr:\n%s", strings.Join(logged, "\n"))
		}
	})
	var admin string
	select {
	case admin = <-adminc:
	case <-time.After(30 * time.Second):
		t.Fatal("no start-up line naming the admin address within 30s")
	}

	v := xds.Set(
		&listenerv3.Listener{Name: "ingress", Address: socketAddr("127.0.0.1", 0),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &hcmv3.HttpConnectionManager{StatPrefix: "ingress",
					RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "rds", ConfigSource: &corev3.ConfigSource{
						ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}}},
					HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
				})}}}}}},
		&routev3.RouteConfiguration{Name: "rds", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"},
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "app"}}}}}}}},
		staticCluster("app", strings.TrimPrefix(app.URL, "http://")),
	)
	for _, typ := range []string{"envoy.config.listener.v3.Listener", "envoy.config.route.v3.RouteConfiguration", "envoy.config.cluster.v3.Cluster"} {
		xds.WaitACK("type.googleapis.com/"+typ, v)
	}

	// The listener is bound once its ACK is sent; the admin listener names
	// its address.
	var ingress string
	waitFor(t, 30*time.Second, "the ingress listener on /listeners", func() bool {
		body, err := get("http://" + admin + "/listeners")
		if err != nil {
			return false
		}
		for _, line := range strings.Split(body, "\n") {
			if a, ok := strings.CutPrefix(line, "ingress::"); ok {
				ingress = a
			}
		}
		return ingress != ""
	})
	body, err := get("http://" + ingress + "/hello")
	if err != nil || body != "app saw GET /hello" {
		t.Fatalf("GET through weft-proxy: %q, %v", body, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for Cleanup
		if err != nil {
			t.Fatalf("weft-proxy after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("weft-proxy did not exit within 30s of SIGTERM")
	}
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

// waitFor polls cond every 20 ms until it holds, failing t at the deadline.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		<-tick.C
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func socketAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func staticCluster(name, addr string) *clusterv3.Cluster {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddr(host, uint32(p))}}}}}}}}
}
