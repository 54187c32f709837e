package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"

	"github.com/weftmesh/weft/internal/proxy"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
	"github.com/weftmesh/weft/internal/server"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

func testLog() *slog.Logger {
	if os.Getenv("WEFT_INTEGRATION_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// weft is a running weft server.
type weft struct {
	base string // API URL
	xds  string // ADS address
	mesh *sdk.Client
}

// startServer runs weft server in this process on loopback until the test
// ends.
func startServer(t *testing.T) *weft {
	t.Helper()
	return startServerWith(t, server.Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DataDir: t.TempDir(), Region: "us-east-1", AccountID: "111122223333"})
}

// startServerWith runs weft server with cfg until the test ends.
func startServerWith(t *testing.T, cfg server.Config) *weft {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, testLog()) }() // ends with cancel in Cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	w := &weft{base: "http://" + cfg.APIAddr, xds: cfg.XDSAddr}
	waitUntil(t, 20*time.Second, "the API", func() bool {
		select {
		case err := <-done:
			t.Fatalf("server Run ended: %v", err)
		default:
		}
		resp, err := http.Get(w.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	w.mesh = sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(w.base),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	return w
}

// proxy returns GET /v1/proxies' entry for a node id ("" while not
// connected).
func (w *weft) proxy(t *testing.T, nodeID string) xdsserver.ProxyStatus {
	t.Helper()
	resp, err := http.Get(w.base + "/v1/proxies")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/proxies: %s", resp.Status)
	}
	var v struct{ Proxies []xdsserver.ProxyStatus }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	for _, p := range v.Proxies {
		if p.NodeID == nodeID {
			return p
		}
	}
	return xdsserver.ProxyStatus{}
}

// startProxy runs weft proxy in this process for node id until the test
// ends, and waits until it is LIVE.
func startProxy(t *testing.T, w *weft, nodeID string) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{ResourceARN: nodeID, XDS: w.xds, AdminAddr: "127.0.0.1:0", XDSBackoffBase: 20 * time.Millisecond}, testLog())
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
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	defer lcancel()
	if err := p.WaitLive(lctx); err != nil {
		t.Fatalf("proxy %s not LIVE: %v", nodeID, err)
	}
	return p
}

// waitUntil polls cond until it holds, failing the test at the deadline;
// for state only visible by asking (the API, stats).
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// redirect sends TCP connections for dst to port on the same host, as
// weft intercept does for a sidecar, until the test ends: the package's
// tests share one network namespace, and a rule left behind would send
// a later test's connections to that address somewhere else.
func redirect(t *testing.T, dst string, port int) {
	t.Helper()
	host, dport, err := net.SplitHostPort(dst)
	if err != nil {
		t.Fatal(err)
	}
	rule := []string{"OUTPUT", "-p", "tcp", "-d", host, "--dport", dport, "-j", "REDIRECT", "--to-ports", strconv.Itoa(port)}
	if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat", "-A"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat", "-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("iptables -D: %v: %s", err, out)
		}
	})
}

// serveApp runs a plain HTTP app on addr answering its name.
func serveApp(t *testing.T, addr, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprint(rw, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // ends with Close in Cleanup
	t.Cleanup(func() { srv.Close() })
}

// peerCert makes a TLS handshake with addr and returns the certificate
// presented; roots nil accepts any (the caller checks what came).
func peerCert(addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots, InsecureSkipVerify: roots == nil}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// get sends GET / over TLS to addr and returns the body.
func get(t *testing.T, addr, serverName string, roots *x509.CertPool) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: serverName, RootCAs: roots}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET https://%s/: %s %s", addr, resp.Status, b)
	}
	return string(b)
}

// TestTLSBadFileInput gives a virtual node a STRICT listener with file
// certificates, runs weft proxy for it, then points the spec at a missing
// file and at a certificate whose key does not match: each update is
// NACKed, /v1/proxies says why naming the field and the path, and the
// proxy keeps serving TLS with the last good certificate. An expired
// certificate is loaded and served, as Envoy does, and counted.
func TestTLSBadFileInput(t *testing.T) {
	needNamespace(t)
	w := startServer(t)
	ctx := t.Context()
	const nodeID = "mesh/m/virtualNode/red"
	const host = "red.m.local"
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "integration CA")
	good := ca.Issue(t, []string{host})
	goodChain := tlstest.Write(t, dir, "good.crt", good.CertPEM)
	goodKey := tlstest.Write(t, dir, "good.key", good.KeyPEM)
	serveApp(t, "127.0.0.1:8080", "red")

	spec := func(chain, key string) *types.VirtualNodeSpec {
		return &types.VirtualNodeSpec{
			Listeners: []types.Listener{{
				PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp},
				Tls: &types.ListenerTls{Mode: types.ListenerTlsModeStrict,
					Certificate: &types.ListenerTlsCertificateMemberFile{Value: types.ListenerTlsFileCertificate{
						CertificateChain: aws.String(chain), PrivateKey: aws.String(key)}}},
			}},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String(host)}},
		}
	}
	if _, err := w.mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("red"),
		Spec: spec(goodChain, goodKey)}); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, w, nodeID)
	// What iptables does for a sidecar: connections for the app's port
	// reach the proxy's ingress listener, which matches the filter chain
	// on the original destination.
	const ingress = "127.0.0.2:8080"
	redirect(t, ingress, 15000)
	if got := get(t, ingress, host, ca.Pool()); got != "red" {
		t.Fatalf("through the STRICT listener: %q", got)
	}
	// Plaintext is refused on a STRICT listener.
	if resp, err := http.Get("http://" + ingress + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatalf("plaintext request served by a STRICT listener")
		}
	}
	if n := w.proxy(t, nodeID).LastNack; n != nil {
		t.Fatalf("NACK with good files: %+v", n)
	}

	update := func(t *testing.T, chain, key string) {
		t.Helper()
		if _, err := w.mesh.UpdateVirtualNode(ctx, &sdk.UpdateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("red"),
			Spec: spec(chain, key)}); err != nil {
			t.Fatal(err)
		}
	}
	// stillGood checks that the proxy serves the good certificate.
	stillGood := func(t *testing.T) {
		t.Helper()
		c, err := peerCert(ingress, host, ca.Pool())
		if err != nil {
			t.Fatalf("handshake after a refused update: %v", err)
		}
		if c.SerialNumber.Cmp(good.Cert.SerialNumber) != 0 {
			t.Fatalf("serving serial %x, want the last good %x", c.SerialNumber, good.Cert.SerialNumber)
		}
		if got := get(t, ingress, host, ca.Pool()); got != "red" {
			t.Fatalf("through the listener: %q", got)
		}
	}
	// nacked waits for a NACK whose message has every part in want.
	nacked := func(t *testing.T, want ...string) {
		t.Helper()
		var last *xdsserver.NackStatus
		defer func() {
			if t.Failed() {
				t.Logf("last state: %+v", w.proxy(t, nodeID))
			}
		}()
		waitUntil(t, 20*time.Second, fmt.Sprintf("a NACK saying %q", want), func() bool {
			last = w.proxy(t, nodeID).LastNack
			if last == nil {
				return false
			}
			for _, s := range want {
				if !strings.Contains(last.Message, s) {
					return false
				}
			}
			return true
		})
		t.Logf("lastNack: %s %s", last.Type, last.Message)
	}

	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.crt")
		update(t, missing, goodKey)
		nacked(t, "tls_certificates[0]", missing, "no such file or directory")
		stillGood(t)
	})

	t.Run("key does not match", func(t *testing.T) {
		other := ca.Issue(t, []string{host})
		chain := tlstest.Write(t, dir, "mismatch.crt", good.CertPEM)
		key := tlstest.Write(t, dir, "mismatch.key", other.KeyPEM)
		update(t, chain, key)
		nacked(t, "tls_certificates", chain, key, "private key does not match public key")
		stillGood(t)
	})

	t.Run("expired certificate", func(t *testing.T) {
		// Envoy loads an expired certificate and serves it (clients
		// then refuse it); so does weft proxy, without a NACK, logging
		// and counting it.
		expired := ca.IssueValid(t, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), []string{host})
		chain := tlstest.Write(t, dir, "expired.crt", expired.CertPEM)
		key := tlstest.Write(t, dir, "expired.key", expired.KeyPEM)
		before := w.proxy(t, nodeID).LastNack
		update(t, chain, key)
		waitUntil(t, 20*time.Second, "the expired certificate in use", func() bool {
			c, err := peerCert(ingress, host, nil)
			return err == nil && c.SerialNumber.Cmp(expired.Cert.SerialNumber) == 0
		})
		if n, _ := p.Stats.Value("tls_files.expired_certificate"); n != 1 {
			t.Errorf("tls_files.expired_certificate = %d, want 1", n)
		}
		if after := w.proxy(t, nodeID).LastNack; after == nil || before == nil || !after.At.Equal(before.At) {
			t.Errorf("lastNack changed for an expired certificate: %+v, was %+v", after, before)
		}
		if _, err := peerCert(ingress, host, ca.Pool()); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("a verifying client accepted the expired certificate: %v", err)
		}
	})
}
