package ha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
)

// serveColor runs a plain HTTP app on a free loopback port answering
// its name, until the test ends, and returns the port.
func serveColor(t *testing.T, name string) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(rw, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // ends with Close in Cleanup
	t.Cleanup(func() { srv.Close() })
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// createGateway creates a virtual gateway listening on port whose only
// gateway route sends every request to color.ha.local (the router
// splitting between blue and green).
func createGateway(t *testing.T, c *sdk.Client, name string, port int) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: aws.String(mesh), VirtualGatewayName: aws.String(name),
		Spec: &types.VirtualGatewaySpec{Listeners: []types.VirtualGatewayListener{{PortMapping: &types.VirtualGatewayPortMapping{
			Port: aws.Int32(int32(port)), Protocol: types.VirtualGatewayPortProtocolHttp}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateGatewayRoute(ctx, &sdk.CreateGatewayRouteInput{MeshName: aws.String(mesh), VirtualGatewayName: aws.String(name),
		GatewayRouteName: aws.String("all"), Spec: &types.GatewayRouteSpec{HttpRoute: &types.HttpGatewayRoute{
			Match: &types.HttpGatewayRouteMatch{Prefix: aws.String("/")},
			Action: &types.HttpGatewayRouteAction{Target: &types.GatewayRouteTarget{VirtualService: &types.GatewayRouteVirtualService{
				VirtualServiceName: aws.String("color.ha.local")}}}}}}); err != nil {
		t.Fatal(err)
	}
}

// gatewayProxy is a `weft proxy` process serving one virtual gateway on
// loopback: its listener on the gateway's port, its egress hop on a port
// of its own, so that several run on one machine.
type gatewayProxy struct {
	name   string
	url    string // the gateway listener
	admin  string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 { // bounded: keep the start and stop growing
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startGatewayProxy runs weft proxy for gateway name (listening on port)
// with every replica's xDS address, and waits until it is LIVE.
func startGatewayProxy(t *testing.T, bin, name string, port int, xds []string) *gatewayProxy {
	t.Helper()
	ps := freePorts(t, 3)
	g := &gatewayProxy{name: name, url: fmt.Sprintf("http://127.0.0.1:%d/", port), admin: fmt.Sprintf("http://127.0.0.1:%d", ps[0]),
		stderr: &lockedBuffer{}, exited: make(chan error, 1)}
	g.cmd = exec.Command(bin, "proxy", "--resource-arn", "mesh/"+mesh+"/virtualGateway/"+name, "--xds", strings.Join(xds, ","),
		"--admin-addr", strings.TrimPrefix(g.admin, "http://"), "--ingress-port", fmt.Sprint(ps[1]), "--egress-port", fmt.Sprint(ps[2]),
		"--concurrency", "1")
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }() // ends when the process does (SIGKILL at cleanup)
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.exited
		if t.Failed() {
			t.Logf("proxy %s stderr (tail):\n%s", name, tail(g.stderr.String(), 3000))
		}
	})
	local := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := local.Get(g.admin + "/ready")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) == "LIVE" {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy %s not LIVE within 30s: %v\n%s", name, err, tail(g.stderr.String(), 3000))
		}
		select {
		case err := <-g.exited:
			t.Fatalf("proxy %s exited: %v\n%s", name, err, tail(g.stderr.String(), 3000))
		case <-tick.C:
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// traffic sends requests through gateway proxies at a steady rate and
// counts every answer: an error, a non-200 or a body other than a color
// is a failed request.
type traffic struct {
	ok, failed atomic.Int64
	perColor   sync.Map // color -> *atomic.Int64
	mu         sync.Mutex
	errs       []string // the first few failures
}

// run sends one request every interval through each proxy until stop.
func (tr *traffic) run(gs []*gatewayProxy, interval time.Duration, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, g := range gs {
		c := &http.Client{Timeout: 5 * time.Second}
		every(&wg, interval, stop, func() {
			if err := tr.one(c, g.url); err != nil {
				tr.failed.Add(1)
				tr.mu.Lock()
				if len(tr.errs) < 10 {
					tr.errs = append(tr.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), g.name, err))
				}
				tr.mu.Unlock()
				return
			}
			tr.ok.Add(1)
		})
	}
	return &wg
}

// every calls fn every interval, in a goroutine of wg, until stop is
// closed.
func every(wg *sync.WaitGroup, interval time.Duration, stop <-chan struct{}, fn func()) {
	wg.Go(func() { // ends when stop is closed
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			fn()
		}
	})
}

func (tr *traffic) one(c *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	req.Host = "color.ha.local"
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	color := string(b)
	if color != "blue" && color != "green" {
		return errors.New("unexpected body " + color)
	}
	n, _ := tr.perColor.LoadOrStore(color, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	return nil
}

func (tr *traffic) summary() string {
	var colors []string
	tr.perColor.Range(func(k, v any) bool {
		colors = append(colors, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	return fmt.Sprintf("%d requests answered (%s), %d failed", tr.ok.Load(), strings.Join(colors, " "), tr.failed.Load())
}

// waitFor polls cond (state only visible by asking) until it returns
// nil, failing the test with its last error at the deadline.
func waitFor(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		<-tick.C
	}
}

// watchBlueWeights samples the proxy's /config_dump every interval until
// stop and records blue's weight in its routes each time it changes: the
// weights written only grow, so a smaller one after a larger is a
// configuration older than one the proxy already applied.
func (g *gatewayProxy) watchBlueWeights(interval time.Duration, stop <-chan struct{}) (history func() []float64, wg *sync.WaitGroup) {
	var mu sync.Mutex
	var hist []float64
	wg = &sync.WaitGroup{}
	c := &http.Client{Timeout: 2 * time.Second}
	every(wg, interval, stop, func() {
		resp, err := c.Get(g.admin + "/config_dump")
		if err != nil {
			return
		}
		var dump any
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&dump)
		resp.Body.Close()
		if err != nil {
			return
		}
		w, ok := blueWeight(dump)
		mu.Lock()
		if ok && (len(hist) == 0 || hist[len(hist)-1] != w) {
			hist = append(hist, w)
		}
		mu.Unlock()
	})
	return func() []float64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(hist)
	}, wg
}

// blueWeight finds the weight of the weighted cluster naming blue in an
// Envoy-shaped config dump.
func blueWeight(v any) (float64, bool) {
	switch v := v.(type) {
	case map[string]any:
		if name, ok := v["name"].(string); ok && strings.Contains(name, "blue") {
			if w, ok := v["weight"].(float64); ok {
				return w, true
			}
		}
		for _, x := range v {
			if w, ok := blueWeight(x); ok {
				return w, true
			}
		}
	case []any:
		for _, x := range v {
			if w, ok := blueWeight(x); ok {
				return w, true
			}
		}
	}
	return 0, false
}
