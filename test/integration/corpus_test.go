package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/proxy"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
	"github.com/weftmesh/weft/internal/server"
)

// Environment of a test binary re-executed as one weft proxy inside a
// network namespace (see runProxy).
const (
	proxyNodeEnv = "WEFT_INTEGRATION_PROXY_NODE"
	proxyXDSEnv  = "WEFT_INTEGRATION_PROXY_XDS"
)

// runProxy is the test binary as weft proxy for one node, until SIGTERM.
// A proxy's sockets belong to the network namespace of the thread that
// opens them, and weft proxy opens them from many goroutines: to put one
// in a namespace, the whole process runs there (ip netns exec), as
// `weft proxy` does in test/e2e.
func runProxy() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := proxy.New(proxy.Config{ResourceARN: os.Getenv(proxyNodeEnv), XDS: os.Getenv(proxyXDSEnv),
		AdminAddr: "127.0.0.1:9901", XDSBackoffBase: 20 * time.Millisecond}, log)
	if err != nil {
		log.Error("proxy", "err", err)
		return 1
	}
	if err := p.Run(ctx); err != nil {
		log.Error("proxy", "err", err)
		return 1
	}
	return 0
}

// tlsCase is one TLS case of the conformance corpus with a gateway in
// front of one virtual node.
type tlsCase struct {
	dir      string // under testdata/appmesh-examples
	mesh     string
	gateway  string // virtual gateway name
	node     string // virtual node name
	port     int    // listener port of both (the app's port)
	domain   string // the certificates' DNS names are <file prefix>.<domain>
	cloudMap string // namespace of the node's awsCloudMap service discovery ("" for DNS)
	service  string // its service, or the DNS hostname
}

var tlsCases = []tlsCase{
	{dir: "howto-mutual-tls-file-provided", mesh: "ColorApp-MutualTLS", gateway: "gateway-vgw", node: "colorteller-vn", port: 9080,
		domain: "appmesh-mtls.local", cloudMap: "appmesh-mtls.local", service: "colorteller"},
	{dir: "howto-mutual-tls-file-provided-by-acm", mesh: "mtls-appmesh", gateway: "gateway-vgw", node: "colorteller-vn", port: 9080,
		domain: "mtls.svc.cluster.local", cloudMap: "mtls.svc.cluster.local", service: "colorteller"},
	{dir: "tls-with-acm", mesh: "ColorApp-TLS", gateway: "ColorGateway", node: "ColorTellerWhite", port: 80,
		domain: "default.svc.cluster.local", service: "colorteller.default.svc.cluster.local"},
}

// TestCorpusTLSTraffic runs the TLS cases of the corpus with a gateway
// and a virtual node, each weft proxy in a network namespace of its own:
// every step of the case is applied through the AWS CLI with the case's
// own input files (certificate files replaced by ones made here from one
// test CA, with the SANs the case lists), the proxies take every version
// without a NACK, and requests to the gateway reach the node's app
// through TLS (mutual where the case says so).
func TestCorpusTLSTraffic(t *testing.T) {
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatal("the AWS CLI is needed (scripts/test.sh installs it)")
	}
	ctx := t.Context()
	lab, err := netns.New(ctx, labFamily, netip.MustParsePrefix("10.77.0.0/24"), testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab: %v", err)
		}
	})
	// The bridge lives in this test's own namespace: give it an address
	// so that the proxies reach weft server, which runs here.
	br := lab.Prefix() + "br"
	if out, err := exec.Command("ip", "addr", "add", "10.77.0.1/24", "dev", br).CombinedOutput(); err != nil {
		t.Fatalf("ip addr: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "link", "set", br, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	for i, c := range tlsCases {
		t.Run(c.dir, func(t *testing.T) {
			gw, err := lab.AddHost(ctx, fmt.Sprintf("g%d", i), netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + 2*i)}), netns.HostOptions{})
			if err != nil {
				t.Fatal(err)
			}
			node, err := lab.AddHost(ctx, fmt.Sprintf("n%d", i), netip.AddrFrom4([4]byte{10, 77, 0, byte(11 + 2*i)}), netns.HostOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c.run(t, gw, node)
		})
	}
}

func (c tlsCase) run(t *testing.T, gw, node *netns.Host) {
	ctx := t.Context()
	// weft server on the bridge: reachable from the namespaces only (the
	// test's namespace is its own), so started insecure.
	cfg := server.Config{APIAddr: freeAddr(t), XDSAddr: "10.77.0.1:" + port(t), DataDir: t.TempDir(), Region: "us-east-1",
		AccountID: "111122223333", Insecure: true, XDSInsecure: true}
	w := startServerWith(t, cfg)

	// Certificates: ca_cert.pem is the test CA; <id>_..._cert_chain.pem
	// a leaf for <id>.<domain> followed by the CA, <id>_...key.pem its key.
	ca := tlstest.NewCA(t, "corpus CA")
	dir := t.TempDir()
	leaves := map[string]tlstest.Leaf{}
	files := map[string]string{}
	fileFor := func(p string) string {
		if f, ok := files[p]; ok {
			return f
		}
		base := filepath.Base(p)
		id, _, _ := strings.Cut(base, "_")
		var b []byte
		switch {
		case base == "ca_cert.pem":
			b = ca.PEM
		default:
			l, ok := leaves[id]
			if !ok {
				l = ca.Issue(t, []string{id + "." + c.domain})
				leaves[id] = l
			}
			if strings.Contains(base, "key") {
				b = l.KeyPEM
			} else {
				b = append(append([]byte{}, l.CertPEM...), ca.PEM...)
			}
		}
		files[p] = tlstest.Write(t, dir, base, b)
		return files[p]
	}
	paths := regexp.MustCompile(`"(/keys/[^"]+)"`)

	// Where the node is found: a Cloud Map instance, or a name in the
	// gateway's /etc/hosts.
	if c.cloudMap != "" {
		var op struct{ OperationId string }
		w.aws(t, &op, "servicediscovery", "create-private-dns-namespace", "--name", c.cloudMap, "--vpc", "vpc-0123456789abcdef0")
		nsID := w.waitOperation(t, op.OperationId)["NAMESPACE"]
		var svc struct{ Service struct{ Id string } }
		w.aws(t, &svc, "servicediscovery", "create-service", "--name", c.service, "--namespace-id", nsID,
			"--dns-config", "RoutingPolicy=MULTIVALUE,DnsRecords=[{Type=A,TTL=60}]")
		var reg struct{ OperationId string }
		w.aws(t, &reg, "servicediscovery", "register-instance", "--service-id", svc.Service.Id, "--instance-id", "i-1",
			"--attributes", fmt.Sprintf("AWS_INSTANCE_IPV4=%s,AWS_INSTANCE_PORT=%d", node.Addr, c.port))
		w.waitOperation(t, reg.OperationId)
	} else {
		etc := filepath.Join(netns.EtcDir, gw.Name)
		if err := os.MkdirAll(etc, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(etc) })
		if err := os.WriteFile(filepath.Join(etc, "hosts"), fmt.Appendf(nil, "127.0.0.1 localhost\n%s %s\n", node.Addr, c.service), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The node's app, and what weft intercept does for its sidecar.
	var ln net.Listener
	if err := node.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", c.port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprint(rw, c.node)
	}), ReadHeaderTimeout: 5 * time.Second}
	go app.Serve(ln) // ends with Close in Cleanup
	t.Cleanup(func() { app.Close() })
	if out, err := node.Command(ctx, -1, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
		"--dport", fmt.Sprint(c.port), "-j", "REDIRECT", "--to-ports", "15000").CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}

	gwID := fmt.Sprintf("mesh/%s/virtualGateway/%s", c.mesh, c.gateway)
	nodeID := fmt.Sprintf("mesh/%s/virtualNode/%s", c.mesh, c.node)
	var steps struct {
		Setup []struct{ Op, Input string }
	}
	raw, err := os.ReadFile(filepath.Join(corpusDir, c.dir, "steps.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &steps); err != nil {
		t.Fatal(err)
	}
	client := nsClient(gw)
	url := fmt.Sprintf("http://%s:%d/", gw.Addr, c.port)
	started := false
	for i, s := range steps.Setup {
		in, err := os.ReadFile(filepath.Join(corpusDir, c.dir, s.Input))
		if err != nil {
			t.Fatal(err)
		}
		in = paths.ReplaceAllFunc(in, func(m []byte) []byte {
			return []byte(`"` + fileFor(string(m[1:len(m)-1])) + `"`)
		})
		f := filepath.Join(dir, fmt.Sprintf("step%02d.json", i))
		if err := os.WriteFile(f, in, 0o600); err != nil {
			t.Fatal(err)
		}
		w.aws(t, nil, "appmesh", s.Op, "--cli-input-json", "file://"+f)
		if !started && strings.HasPrefix(s.Op, "create-gateway-route") {
			// The whole topology exists: start its proxies.
			startNSProxy(t, node, nodeID, cfg.XDSAddr)
			startNSProxy(t, gw, gwID, cfg.XDSAddr)
			started = true
		}
		if !started {
			continue
		}
		// Each step is taken by both proxies without a NACK.
		for _, id := range []string{nodeID, gwID} {
			waitUntil(t, 30*time.Second, id+" in step "+s.Input, func() bool {
				ps := w.proxy(t, id)
				if ps.LastNack != nil {
					t.Fatalf("step %s: %s NACKed %s: %s", s.Input, id, ps.LastNack.Type, ps.LastNack.Message)
				}
				if ps.Replicas == 0 || ps.Error != "" {
					return false
				}
				for _, ts := range ps.Types {
					if ts.Acked != ts.Version {
						return false
					}
				}
				return true
			})
		}
		if strings.Contains(s.Input, "bogus-san") {
			// The case's deliberate mistake: the gateway expects a SAN
			// the node's certificate does not have, and the walkthrough
			// shows requests failing.
			waitUntil(t, 30*time.Second, "requests refused with the bogus SAN", func() bool {
				_, code, err := fetch(client, url)
				return err == nil && code == http.StatusServiceUnavailable
			})
		}
	}
	// The last step is the case's final, TLS, state: requests flow.
	waitUntil(t, 30*time.Second, "a request through the gateway", func() bool {
		b, code, err := fetch(client, url)
		return err == nil && code == 200 && b == c.node
	})
	for range 20 {
		if b, code, err := fetch(client, url); err != nil || code != 200 || b != c.node {
			t.Fatalf("GET %s: %d %q %v", url, code, b, err)
		}
	}
	// The node's listener is STRICT: plaintext straight to it is refused.
	if b, code, err := fetch(client, fmt.Sprintf("http://%s:%d/", node.Addr, c.port)); err == nil && code == 200 {
		t.Fatalf("plaintext request to the node's STRICT listener answered %q", b)
	}
	// And it was TLS: the node's listener counted the handshakes.
	b, _, err := fetch(nsClient(node), "http://127.0.0.1:9901/stats")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^listener\.0\.0\.0\.0_15000\.ssl\.handshake: [1-9]`).MatchString(b) {
		t.Fatalf("no TLS handshake counted on the node's listener:\n%s", grep(b, "ssl"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// port returns a port nothing listens on now.
func port(t *testing.T) string {
	_, p, _ := net.SplitHostPort(freeAddr(t))
	return p
}

// nsClient is an HTTP client whose connections are opened inside h.
func nsClient(h *netns.Host) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := h.Do(func() (err error) {
				c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}

func fetch(c *http.Client, url string) (string, int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// startNSProxy runs this test binary as weft proxy for nodeID inside h
// until the test ends.
func startNSProxy(t *testing.T, h *netns.Host, nodeID, xds string) {
	t.Helper()
	cmd := h.Command(context.Background(), -1, os.Args[0])
	cmd.Env = append(os.Environ(), proxyNodeEnv+"="+nodeID, proxyXDSEnv+"="+xds)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() // ends when the process does; Cleanup makes sure it does
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- weft proxy %s:\n%s", nodeID, tail(stderr.String(), 30))
		}
	})
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// corpusDir is the App Mesh examples corpus.
const corpusDir = "../../testdata/appmesh-examples"

// aws runs the AWS CLI against weft; out, when not nil, receives its JSON.
func (w *weft) aws(t *testing.T, out any, args ...string) {
	t.Helper()
	cmd := exec.Command("aws", append([]string{"--endpoint-url", w.base, "--output", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=weft", "AWS_SECRET_ACCESS_KEY=weft", "AWS_DEFAULT_REGION=us-east-1",
		"AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("aws %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("aws %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
}

// waitOperation waits for a Cloud Map operation to succeed and returns
// its targets.
func (w *weft) waitOperation(t *testing.T, id string) map[string]string {
	t.Helper()
	var targets map[string]string
	waitUntil(t, 30*time.Second, "operation "+id, func() bool {
		var out struct {
			Operation struct {
				Status       string
				ErrorMessage string
				Targets      map[string]string
			}
		}
		w.aws(t, &out, "servicediscovery", "get-operation", "--operation-id", id)
		if out.Operation.Status == "FAIL" {
			t.Fatalf("operation %s failed: %s", id, out.Operation.ErrorMessage)
		}
		targets = out.Operation.Targets
		return out.Operation.Status == "SUCCESS"
	})
	return targets
}
