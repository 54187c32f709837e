//go:build linux

package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/netns/netnstest"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// sidecarChildEnv, set, makes TestEvloopAppMeshSidecar the half that runs
// inside the network namespace its parent made.
const sidecarChildEnv = "WEFT_TEST_SIDECAR_NETNS"

// The namespace's addresses (on its loopback): the task, where the
// ingress's original destination is; a backend host; the application
// (its outbound connections are redirected to the egress listener) and a
// peer (its connections to the task's port 8080 are redirected to the
// ingress listener). The proxy's own connections come from other
// addresses, so that they are not redirected.
const (
	sidecarTask = "10.251.210.1"
	sidecarHost = "10.251.210.3"
	sidecarApp  = "10.251.210.10"
	sidecarPeer = "10.251.210.20"
)

// TestEvloopAppMeshSidecar runs weft proxy as a sidecar behind real
// iptables REDIRECT rules, in a network namespace the test makes, with
// the listeners the translator gives a virtual node (a backend on port
// 8080, access logs on), under DROP_ALL and ALLOW_ALL, on the loops and
// on goroutines. On the loops the egress listener's HTTP chain and the
// logged ingress are served by them (nothing handed off); a connection
// to another port follows the egress filter (passed through, or closed);
// TLS to 443 with an *.amazonaws.com SNI passes through; the access log
// lines are the same both ways, the ingress's local address the one
// before NAT.
func TestEvloopAppMeshSidecar(t *testing.T) {
	if os.Getenv(sidecarChildEnv) != "" {
		sidecarInNamespace(t)
		return
	}
	inSidecarNamespace(t, "TestEvloopAppMeshSidecar", sidecarChildEnv)
}

// inSidecarNamespace makes a network namespace with the sidecar's
// addresses and REDIRECT rules (the application's connections to the
// egress listener, port 15001; the peer's to the task's port 8080 to the
// ingress, 15000) and runs the test named test of this binary in it, with
// env set to tell it it is the half inside.
func inSidecarNamespace(t *testing.T, test, env string) {
	netnstest.Require(t, "iptables")
	ns := fmt.Sprintf("wftegr%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	in := func(args ...string) { t.Helper(); run(append([]string{"ip", "netns", "exec", ns}, args...)...) }
	in("ip", "link", "set", "lo", "up")
	for _, a := range []string{sidecarTask, sidecarHost, sidecarApp, sidecarPeer} {
		in("ip", "addr", "add", a+"/32", "dev", "lo")
	}
	in("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", sidecarApp, "-j", "REDIRECT", "--to-ports", "15001")
	in("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", sidecarPeer, "-d", sidecarTask, "--dport", "8080",
		"-j", "REDIRECT", "--to-ports", "15000")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+test+"$",
		"-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	t.Logf("in the namespace:\n%s", out)
}

// sidecarInNamespace is TestEvloopAppMeshSidecar's half inside the
// namespace.
func sidecarInNamespace(t *testing.T) {
	// The application's own server (the ingress's local cluster), the
	// backend's, something else on the backend host (for ALLOW_ALL), and
	// an AWS API stand-in behind TLS on 443.
	serve := func(addr, name string, tlsOn bool) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		}))
		s.Listener = ln
		if tlsOn {
			s.StartTLS()
		} else {
			s.Start()
		}
		t.Cleanup(s.Close)
	}
	serve("127.0.0.1:8080", "app", false)
	serve(sidecarHost+":8080", "backend", false)
	serve(sidecarHost+":9999", "elsewhere", false)
	serve(sidecarHost+":443", "aws", true)
	lines := map[bool]string{}
	for _, filter := range []string{"DROP_ALL", "ALLOW_ALL"} {
		for _, loops := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s loops=%v", filter, loops), func(t *testing.T) {
				got := sidecarRun(t, filter, loops)
				if filter == "ALLOW_ALL" {
					lines[loops] = got
				}
			})
		}
	}
	if g, l := sortLines(lines[false]), sortLines(lines[true]); g != l {
		t.Errorf("access logs:\ngoroutine path:\n%s\nloops:\n%s", lines[false], lines[true])
	}
}

// sidecarFormat is the node's access log format: the request, where it
// went and the downstream addresses (the remote's port differs from run
// to run).
const sidecarFormat = "%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% " +
	"%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %ROUTE_NAME%\n"

// sidecarRun runs one proxy with the translator's resources for the
// virtual node "front" under the egress filter, sends what the
// application and a peer send, and returns the access log.
func sidecarRun(t *testing.T, filter string, loops bool) string {
	logPath := filepath.Join(t.TempDir(), "access.log")
	v := sidecarView(t, filter, logPath)
	push := translatedResources(t, v, translate.Identity{MeshOwner: "111122223333", Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "front"}, nil)
	h := newHarness(t, func(c *Config) { c.Goroutines = !loops })
	h.push(push...)
	egress, ingress := h.listener("lds_egress_0.0.0.0_15001"), h.listener("lds_ingress_0.0.0.0_15000")
	if egress.OnLoops() != loops || ingress.OnLoops() != loops {
		t.Fatalf("on the loops: egress %v, ingress %v; want %v", egress.OnLoops(), ingress.OnLoops(), loops)
	}
	from := func(src string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{ServerName: "s3.us-east-1.amazonaws.com", InsecureSkipVerify: true}}} // the stand-in's certificate is httptest's
	}
	app, peer := from(sidecarApp), from(sidecarPeer)
	send := func(c *http.Client, url, host string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b), nil
	}
	want := func(c *http.Client, url, host, body string) {
		t.Helper()
		if got, err := send(c, url, host); err != nil || got != body {
			t.Fatalf("GET %s (Host %s): %q %v, want %q", url, host, got, err, body)
		}
	}
	// The backend's port, each request on a connection of its own: the
	// egress's HTTP chain, on the loops.
	for i := range 3 {
		want(app, fmt.Sprintf("http://%s:8080/b%d", sidecarHost, i), "backend.local", "200 backend")
	}
	if loops && egress.HandedOff() != 0 {
		t.Errorf("egress: %d connections to the backend's port handed off, want the loops to serve them", egress.HandedOff())
	}
	// The peer's requests to the task's port: the logged ingress.
	for i := range 2 {
		want(peer, fmt.Sprintf("http://%s:8080/in%d", sidecarTask, i), "front.local", "200 app")
	}
	if loops && ingress.HandedOff() != 0 {
		t.Errorf("ingress: %d connections handed off, want the loops to serve them", ingress.HandedOff())
	}
	for name, n := range map[string]int64{"http.egress.downstream_rq_2xx": 3, "http.ingress.downstream_rq_2xx": 2} {
		if got := h.stat(name); got != n {
			t.Errorf("%s = %d, want %d", name, got, n)
		}
	}
	logged := 5
	// Another port: the egress filter decides.
	got, err := send(app, fmt.Sprintf("http://%s:9999/other", sidecarHost), "elsewhere.example")
	switch filter {
	case "ALLOW_ALL":
		if err != nil || got != "200 elsewhere" {
			t.Errorf("ALLOW_ALL, another port: %q %v, want it passed through", got, err)
		}
		logged++
	default:
		if err == nil {
			t.Errorf("DROP_ALL, another port: answered %q, want the connection closed", got)
		}
		// The goroutine path's socket is dual-stack: its stats name "::".
		waitUntil(t, 10*time.Second, "no_filter_chain_match", func() bool {
			return h.stat("listener.0.0.0.0_15001.no_filter_chain_match")+h.stat("listener.::_15001.no_filter_chain_match") >= 1
		})
	}
	// TLS to an AWS API on 443 passes through, whatever the filter.
	want(app, fmt.Sprintf("https://%s:443/aws", sidecarHost), "s3.us-east-1.amazonaws.com", "200 aws")
	logged++
	if loops && egress.HandedOff() == 0 {
		t.Error("egress: the TLS connection to 443 was not handed off (its SNI is peeked at on the goroutine path)")
	}
	var log string
	waitUntil(t, 10*time.Second, "the access log lines", func() bool {
		b, _ := os.ReadFile(logPath)
		log = string(b)
		return strings.Count(log, "\n") >= logged
	})
	if want := "GET /in0 front.local 200 - cds_ingress_m_front_http_8080 " + sidecarTask + ":8080 " + sidecarPeer; !strings.Contains(log, want) {
		t.Errorf("ingress log line: want %q (the local address before NAT) in\n%s", want, log)
	}
	return log
}

// sidecarView is a mesh with the egress filter and two virtual nodes:
// "front" (the sidecar's: port 8080, backend.local as its backend,
// access logs to logPath) and "back", backend.local's provider, whose
// Cloud Map instance is on the backend host.
func sidecarView(t *testing.T, filter, logPath string) *translate.View {
	mesh, front, back, svc := "m", "front", "back", "backend.local"
	v := meshView(mesh, map[string][]translate.Endpoint{back: {{IPv4: sidecarHost, Port: 8080}}})
	decodeJSON(t, `{"egressFilter":{"type":"`+filter+`"}}`, v.Mesh.Spec)
	format, _ := json.Marshal(sidecarFormat)
	fs, bs := &appmesh.VirtualNodeSpec{}, &appmesh.VirtualNodeSpec{}
	decodeJSON(t, `{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}],"serviceDiscovery":{"dns":{"hostname":"front.local"}},`+
		`"backends":[{"virtualService":{"virtualServiceName":"`+svc+`"}}],`+
		`"logging":{"accessLog":{"file":{"path":"`+logPath+`","format":{"text":`+string(format)+`}}}}}`, fs)
	decodeJSON(t, `{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}],"serviceDiscovery":{"awsCloudMap":{"namespaceName":"local","serviceName":"back"}}}`, bs)
	v.VirtualNodes[front] = &appmesh.VirtualNodeData{MeshName: &mesh, VirtualNodeName: &front, Spec: fs}
	v.VirtualNodes[back] = &appmesh.VirtualNodeData{MeshName: &mesh, VirtualNodeName: &back, Spec: bs}
	ss := &appmesh.VirtualServiceSpec{}
	decodeJSON(t, `{"provider":{"virtualNode":{"virtualNodeName":"back"}}}`, ss)
	v.VirtualServices[svc] = &appmesh.VirtualServiceData{MeshName: &mesh, VirtualServiceName: &svc, Spec: ss}
	return v
}
