package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/labproxy"
	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
	"github.com/weftmesh/weft/internal/server"
)

// tlsCase is one TLS case of the conformance corpus: a gateway in front
// of virtual nodes.
type tlsCase struct {
	dir     string // under testdata/appmesh-examples
	mesh    string
	gateway string // virtual gateway name
	// client, in place of a gateway, is a virtual node whose app calls
	// the others through its egress listener (with the backend's Host).
	client   string
	port     int    // the gateway's listener port
	gwTLS    bool   // the gateway's listener is TLS (a weft-issued certificate)
	domain   string // the certificates' DNS names are <file prefix>.<domain>
	cloudMap string // namespace of the nodes' awsCloudMap service discovery ("" for DNS)
	nodes    []tlsNode
	// sans are the DNS names of a certificate file prefix when they are
	// not <prefix>.<domain>: the names the walkthrough issues it for.
	sans map[string][]string
	// paths are requested through the gateway; each answer is the name
	// of a node, and every node listed with the path (all when none)
	// must answer one.
	paths []tlsPath
}

// tlsPath is a path requested through the gateway and the nodes that
// serve it.
type tlsPath struct {
	path  string
	host  string // Host header, for a client node's egress
	nodes []string
}

// tlsNode is one virtual node of a case.
type tlsNode struct {
	name    string
	port    int    // its listener (and app) port
	service string // its Cloud Map service, or its DNS hostname
}

var tlsCases = []tlsCase{
	{dir: "howto-mutual-tls-file-provided", mesh: "ColorApp-MutualTLS", gateway: "gateway-vgw", port: 9080,
		domain: "appmesh-mtls.local", cloudMap: "appmesh-mtls.local", nodes: []tlsNode{{"colorteller-vn", 9080, "colorteller"}}, paths: []tlsPath{{path: "/"}}},
	{dir: "howto-mutual-tls-file-provided-by-acm", mesh: "mtls-appmesh", gateway: "gateway-vgw", port: 9080,
		domain: "mtls.svc.cluster.local", cloudMap: "mtls.svc.cluster.local", nodes: []tlsNode{{"colorteller-vn", 9080, "colorteller"}}, paths: []tlsPath{{path: "/"}}},
	{dir: "tls-with-acm", mesh: "ColorApp-TLS", gateway: "ColorGateway", port: 80,
		domain: "default.svc.cluster.local", nodes: []tlsNode{{"ColorTellerWhite", 80, "colorteller.default.svc.cluster.local"}}, paths: []tlsPath{{path: "/"}}},
	{dir: "howto-tls-file-provided", mesh: "ColorApp-TLS", gateway: "ColorGateway", port: 80,
		domain: "default.svc.cluster.local", nodes: []tlsNode{
			{"ColorTellerWhite", 80, "colorteller.default.svc.cluster.local"},
			{"ColorTellerGreen", 80, "colorteller-green.default.svc.cluster.local"}}, paths: []tlsPath{{path: "/"}},
		sans: map[string][]string{"colorteller_white": {"colorteller.default.svc.cluster.local"}}},
	{dir: "howto-ingress-gateway", mesh: "ColorApp-Ingress", gateway: "colorgateway-vg", port: 9080, gwTLS: true,
		domain: "default.svc.cluster.local", nodes: []tlsNode{
			{"colorteller-white-vn", 9080, "colorteller-white.default.svc.cluster.local"},
			{"colorteller-blue-vn", 9080, "colorteller-blue.default.svc.cluster.local"},
			{"colorteller-black-vn", 9080, "colorteller-black.default.svc.cluster.local"},
			{"colorteller-red-vn", 9080, "colorteller-red.default.svc.cluster.local"}},
		paths: []tlsPath{
			{path: "/color1/tell", nodes: []string{"colorteller-white-vn", "colorteller-blue-vn"}},
			{path: "/color2/tell", nodes: []string{"colorteller-black-vn", "colorteller-red-vn"}}}},
	{dir: "ecs-ec2-crossvpc-with-tls", mesh: "appmesh-workshop", client: "frontend", domain: "appmeshworkshop.hosted.local",
		nodes: []tlsNode{
			{"crystal-lb-vanilla", 3000, "crystal.appmeshworkshop.hosted.local"},
			{"nodejs-lb-strawberry", 3000, "nodejs.appmeshworkshop.hosted.local"}},
		paths: []tlsPath{
			{path: "/", host: "crystal.appmeshworkshop.hosted.local:3000", nodes: []string{"crystal-lb-vanilla"}},
			{path: "/", host: "nodejs.appmeshworkshop.hosted.local:3000", nodes: []string{"nodejs-lb-strawberry"}}}},
}

// TestCorpusTLSTraffic runs the six TLS cases of the corpus, each weft
// proxy (a gateway or client node, and the nodes it calls) in a network
// namespace of its own: every step of the case is applied through the
// AWS CLI with the case's own input files (certificate files replaced by
// ones made here from one test CA, with the DNS names the walkthrough
// issues them for; ACM ARNs are weft's CA), the proxies take every version
// after they start without a NACK, and in the case's final state requests
// through the gateway (or the client's egress) reach every node's app
// over TLS, mutual where the case says so.
func TestCorpusTLSTraffic(t *testing.T) {
	needNamespace(t)
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
	next := byte(10)
	addr := func() netip.Addr {
		next++
		return netip.AddrFrom4([4]byte{10, 77, 0, next})
	}
	for i, c := range tlsCases {
		t.Run(c.dir, func(t *testing.T) {
			gw, err := lab.AddHost(ctx, fmt.Sprintf("c%dg", i), addr(), netns.HostOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var nodes []*netns.Host
			for j := range c.nodes {
				h, err := lab.AddHost(ctx, fmt.Sprintf("c%dn%d", i, j), addr(), netns.HostOptions{})
				if err != nil {
					t.Fatal(err)
				}
				nodes = append(nodes, h)
			}
			c.run(t, gw, nodes)
		})
	}
}

func (c tlsCase) run(t *testing.T, gw *netns.Host, nodes []*netns.Host) {
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
	fileName := regexp.MustCompile(`^(.*?)(_cert_chain|_dec_pri_key|_key)\.pem$`)
	fileFor := func(p string) string {
		if f, ok := files[p]; ok {
			return f
		}
		base := filepath.Base(p)
		var b []byte
		if m := fileName.FindStringSubmatch(base); m != nil && !strings.HasPrefix(base, "ca_") {
			id := m[1]
			l, ok := leaves[id]
			if !ok {
				dns, ok := c.sans[id]
				if !ok {
					dns = []string{strings.ReplaceAll(id, "_", "-") + "." + c.domain}
				}
				l = ca.Issue(t, dns)
				leaves[id] = l
			}
			if m[2] == "_cert_chain" {
				b = append(append([]byte{}, l.CertPEM...), ca.PEM...)
			} else {
				b = l.KeyPEM
			}
		} else { // ca_cert.pem, ca_1_ca_2_bundle.pem: trust
			b = ca.PEM
		}
		files[p] = tlstest.Write(t, dir, base, b)
		return files[p]
	}
	paths := regexp.MustCompile(`"(/keys/[^"]+)"`)

	// Where the nodes are found: Cloud Map instances, or names in the
	// gateway's /etc/hosts.
	if c.cloudMap != "" {
		var op struct{ OperationId string }
		w.aws(t, &op, "servicediscovery", "create-private-dns-namespace", "--name", c.cloudMap, "--vpc", "vpc-0123456789abcdef0")
		nsID := w.waitOperation(t, op.OperationId)["NAMESPACE"]
		for j, n := range c.nodes {
			var svc struct{ Service struct{ Id string } }
			w.aws(t, &svc, "servicediscovery", "create-service", "--name", n.service, "--namespace-id", nsID,
				"--dns-config", "RoutingPolicy=MULTIVALUE,DnsRecords=[{Type=A,TTL=60}]")
			var reg struct{ OperationId string }
			w.aws(t, &reg, "servicediscovery", "register-instance", "--service-id", svc.Service.Id, "--instance-id", "i-1",
				"--attributes", fmt.Sprintf("AWS_INSTANCE_IPV4=%s,AWS_INSTANCE_PORT=%d", nodes[j].Addr, n.port))
			w.waitOperation(t, reg.OperationId)
		}
	} else {
		etc := filepath.Join(netns.EtcDir, gw.Name)
		if err := os.MkdirAll(etc, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(etc) })
		hosts := "127.0.0.1 localhost\n"
		for j, n := range c.nodes {
			hosts += fmt.Sprintf("%s %s\n", nodes[j].Addr, n.service)
		}
		if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The nodes' apps, and what weft intercept does for their sidecars.
	for j, n := range c.nodes {
		var ln net.Listener
		if err := nodes[j].Do(func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		app := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			fmt.Fprint(rw, n.name)
		}), ReadHeaderTimeout: 5 * time.Second}
		go app.Serve(ln) // ends with Close in Cleanup
		t.Cleanup(func() { app.Close() })
		if out, err := nodes[j].Command(ctx, -1, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
			"--dport", fmt.Sprint(n.port), "-j", "REDIRECT", "--to-ports", "15000").CombinedOutput(); err != nil {
			t.Fatalf("iptables: %v: %s", err, out)
		}
	}

	gwID := fmt.Sprintf("mesh/%s/virtualGateway/%s", c.mesh, c.gateway)
	if c.client != "" {
		gwID = fmt.Sprintf("mesh/%s/virtualNode/%s", c.mesh, c.client)
	}
	ids := []string{gwID}
	for _, n := range c.nodes {
		ids = append(ids, fmt.Sprintf("mesh/%s/virtualNode/%s", c.mesh, n.name))
	}
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
	scheme := "http"
	if c.gwTLS {
		scheme = "https"
	}
	url := fmt.Sprintf("%s://%s:%d", scheme, gw.Addr, c.port)
	if c.client != "" {
		// What weft intercept does for the client's app: its
		// connections to port 3000 of an address reach the egress
		// listener, which picks the chain by the original destination
		// port and routes on the Host. The address is one nothing else
		// uses, so that the proxy's own connections to the nodes are
		// left alone (intercept tells them apart by the proxy's uid).
		url = fmt.Sprintf("http://127.0.0.3:%d", c.nodes[0].port)
		if out, err := gw.Command(ctx, -1, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.3",
			"-j", "REDIRECT", "--to-ports", "15001").CombinedOutput(); err != nil {
			t.Fatalf("iptables: %v: %s", err, out)
		}
	}
	started := false
	// The proxies start once the topology exists: at the first gateway
	// route, or after the last step.
	startAt := len(steps.Setup) - 1
	for i, s := range steps.Setup {
		if strings.HasPrefix(s.Op, "create-gateway-route") {
			startAt = i
			break
		}
	}
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
		if !started && i == startAt {
			// The whole topology exists: start its proxies.
			labproxy.Start(t, gw, gwID, cfg.XDSAddr)
			for j := range c.nodes {
				labproxy.Start(t, nodes[j], ids[j+1], cfg.XDSAddr)
			}
			started = true
		}
		if !started {
			continue
		}
		// Each step is taken by both proxies without a NACK.
		for _, id := range ids {
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
				_, code, err := fetch(client, url+"/")
				return err == nil && code == http.StatusServiceUnavailable
			})
		}
	}
	// The last step is the case's final, TLS, state: requests flow to
	// every node.
	gwClient := client
	if c.gwTLS {
		// The gateway's listener is TLS with a certificate weft issued
		// for it (ACM in the case): the client checks its identity.
		gwClient = nsClient(gw)
		want := fmt.Sprintf("spiffe://weft.local/mesh/%s/virtualGateway/%s", c.mesh, c.gateway)
		gwClient.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if u := cs.PeerCertificates[0].URIs; len(u) != 1 || u[0].String() != want {
					return fmt.Errorf("gateway certificate for %v, want %s", u, want)
				}
				return nil
			}}
	}
	for _, p := range c.paths {
		names := map[string]bool{}
		for _, n := range c.nodes {
			if len(p.nodes) == 0 || slices.Contains(p.nodes, n.name) {
				names[n.name] = true
			}
		}
		path := p.path
		// Health checks of the case's own interval (10 s in
		// ecs-ec2-crossvpc-with-tls) may have to pass first.
		waitUntil(t, 60*time.Second, "a request through the gateway to "+path+" "+p.host, func() bool {
			b, code, err := fetchHost(gwClient, url+path, p.host)
			return err == nil && code == 200 && names[b]
		})
		seen := map[string]bool{}
		for range 40 {
			b, code, err := fetchHost(gwClient, url+path, p.host)
			if err != nil || code != 200 || !names[b] {
				t.Fatalf("GET %s: %d %q %v", url+path, code, b, err)
			}
			seen[b] = true
		}
		for n := range names {
			if !seen[n] {
				t.Errorf("GET %s: node %s never answered in 40 requests", url+path, n)
			}
		}
	}
	for j, n := range c.nodes {
		// The node's listener is STRICT: plaintext straight to it is
		// refused; and the requests were TLS, counted on it.
		if b, code, err := fetch(client, fmt.Sprintf("http://%s:%d/", nodes[j].Addr, n.port)); err == nil && code == 200 {
			t.Fatalf("plaintext request to %s's STRICT listener answered %q", n.name, b)
		}
		b, _, err := fetch(nsClient(nodes[j]), "http://127.0.0.1:9901/stats")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^listener\.0\.0\.0\.0_15000\.ssl\.handshake: [1-9]`).MatchString(b) {
			t.Fatalf("no TLS handshake counted on %s's listener:\n%s", n.name, grep(b, "ssl"))
		}
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
	return fetchHost(c, url, "")
}

// fetchHost is fetch with a Host header ("": the URL's).
func fetchHost(c *http.Client, url, host string) (string, int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
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
