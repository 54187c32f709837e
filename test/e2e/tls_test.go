package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
)

// Part 2 of the tutorial: encryption in transit with the mesh's own CA.
// App Mesh users took certificates from ACM and ACM Private CA; the same
// specs work against weft, whose CA issues every proxy's certificate:
//   - green, yellow and blue serve TLS with an ACM certificate ARN (weft
//     issues the node's certificate under that name);
//   - green and yellow require a client certificate (mutual TLS), trusting
//     the mesh's bundle through an SDS secret, and accept only the SPIFFE
//     IDs of red and of the gateway;
//   - red and the gateway present their own certificate (SDS) and trust the
//     CA through an ACM PCA ARN, as App Mesh's clientPolicy did.
const (
	trustDomain = "weft.local"
	// certLifetime is short so that leaves are renewed (at two thirds of
	// their life) while the rotation subtest's load runs.
	certLifetime = 24 * time.Second
	// loadRate is the request rate of the rotation subtests.
	loadRate = 200
)

func spiffeID(kind, name string) string {
	return fmt.Sprintf("spiffe://%s/mesh/color-mesh/%s/%s", trustDomain, kind, name)
}

// tlsListener is a node's listener on port 80 with TLS in the given mode;
// with clients, the client certificate is required and must carry one of
// those SPIFFE IDs.
func (w *world) tlsListener(name, mode string, clients ...string) map[string]any {
	tls := map[string]any{
		"mode": mode,
		"certificate": map[string]any{"acm": map[string]any{
			"certificateArn": fmt.Sprintf("arn:aws:acm:%s:%s:certificate/%s", w.region, w.account, name)}},
	}
	if len(clients) > 0 {
		tls["validation"] = map[string]any{
			"trust":                   map[string]any{"sds": map[string]any{"secretName": "spiffe://" + trustDomain}},
			"subjectAlternativeNames": map[string]any{"match": map[string]any{"exact": clients}},
		}
	}
	return map[string]any{"portMapping": map[string]any{"port": 80, "protocol": "http"}, "tls": tls}
}

// clientPolicy presents the caller's own certificate and trusts the mesh's
// CA named as an ACM Private CA.
func (w *world) clientPolicy(self string) map[string]any {
	return map[string]any{"clientPolicy": map[string]any{"tls": map[string]any{
		"certificate": map[string]any{"sds": map[string]any{"secretName": self}},
		"validation": map[string]any{"trust": map[string]any{"acm": map[string]any{
			"certificateAuthorityArns": []any{fmt.Sprintf("arn:aws:acm-pca:%s:%s:certificate-authority/weft", w.region, w.account)}}}},
	}}}
}

// updateNode saves a tutorial node file with its listener replaced and, if
// given, backend defaults set.
func (w *world) updateNode(t *testing.T, file string, listener, backendDefaults map[string]any) {
	t.Helper()
	node := jsonInput(t, file)
	spec := node["spec"].(map[string]any)
	spec["listeners"] = []any{listener}
	if backendDefaults != nil {
		spec["backendDefaults"] = backendDefaults
	}
	w.aws(nil, "appmesh", "update-virtual-node", "--cli-input-json", w.writeInput("05-"+file, mustJSON(t, node)))
}

// section5: TLS from the gateway to the nodes, mutual TLS from red to the
// router's nodes, certificates rotating under load.
func (w *world) section5(t *testing.T) {
	red, green, yellow := w.tasks["red"], w.tasks["green"], w.tasks["yellow"]
	gw := w.tasks["gateway-1"]
	laptop := w.laptop
	callers := []string{spiffeID("virtualNode", "red"), spiffeID("virtualGateway", "color-gateway")}

	// The callers first, so that nothing is ever refused on the way.
	w.updateNode(t, "03h-update-red.json", jsonInput(t, "03h-update-red.json")["spec"].(map[string]any)["listeners"].([]any)[0].(map[string]any),
		w.clientPolicy(spiffeID("virtualNode", "red")))
	gateway := jsonInput(t, "04a-color-gateway.json")
	gateway["spec"].(map[string]any)["backendDefaults"] = w.clientPolicy(spiffeID("virtualGateway", "color-gateway"))
	w.aws(nil, "appmesh", "update-virtual-gateway", "--cli-input-json", w.writeInput("05-gateway.json", mustJSON(t, gateway)))
	w.updateNode(t, "03b-green-node.json", w.tlsListener("green", "STRICT", callers...), nil)
	w.updateNode(t, "03b-yellow-node.json", w.tlsListener("yellow", "PERMISSIVE", callers...), nil)
	w.updateNode(t, "02c-blue-node.json", w.tlsListener("blue", "STRICT"), nil)
	w.waitConverged(t)

	t.Run("mutual TLS from red", func(t *testing.T) {
		w.waitAll(t, red.host, "http://router.colors.local/", "", "green", "yellow")
		w.assertSplit(t, red.host, "http://router.colors.local/", map[string]float64{"green": 80, "yellow": 20})
		for _, tk := range []*task{green, yellow} {
			if n := w.stat(t, tk, `^listener\..*\.ssl\.handshake$`); n == 0 {
				t.Errorf("%s's ingress listener counted no TLS handshake", tk.name)
			}
		}
		if n := w.stat(t, red, `^cluster\..*\.ssl\.handshake$`); n == 0 {
			t.Errorf("red's clusters counted no TLS handshake")
		}
	})

	t.Run("TLS from the gateway", func(t *testing.T) {
		base := "http://" + gw.host.Addr.String()
		w.waitAll(t, laptop, base+"/", "blue")
		w.assertSplit(t, laptop, base+"/router", map[string]float64{"green": 80, "yellow": 20})
	})

	t.Run("the certificate is the node's, from weft's CA", func(t *testing.T) {
		c := w.serverCert(t, laptop, green.host.Addr.String()+":80")
		if !contains(c.URIs, spiffeID("virtualNode", "green")) || !contains(c.DNSNames, "router.colors.local") {
			t.Errorf("green presents %+v, want its SPIFFE ID and router.colors.local", c)
		}
		t.Logf("green presents serial %s, URIs %v, DNS %v, not after %s", c.Serial, c.URIs, c.DNSNames, c.NotAfter)
	})

	t.Run("STRICT refuses plaintext, PERMISSIVE serves it", func(t *testing.T) {
		if out, code := curl(t, laptop, "http://"+green.host.Addr.String()+"/"); code == 0 {
			t.Errorf("plaintext to green's STRICT listener answered %q, want it refused", out)
		}
		if out, code := curl(t, laptop, "http://"+yellow.host.Addr.String()+"/"); code != 0 || out != "yellow" {
			t.Errorf("plaintext to yellow's PERMISSIVE listener = %q (curl exit %d), want yellow", out, code)
		}
	})

	t.Run("a client whose SAN is not listed is refused", func(t *testing.T) {
		before := w.stat(t, green, `^listener\..*\.ssl\.fail_verify_san$`)
		w.updateNode(t, "03b-green-node.json", w.tlsListener("green", "STRICT", spiffeID("virtualGateway", "color-gateway")), nil)
		w.waitConverged(t)
		c := w.count(red.host, "http://router.colors.local/", 100)
		if c.Bodies["green"] != 0 {
			t.Errorf("green answered red %d times after red's SAN was unlisted (all: %v)", c.Bodies["green"], c.Bodies)
		}
		if after := w.stat(t, green, `^listener\..*\.ssl\.fail_verify_san$`); after <= before {
			t.Errorf("green's ssl.fail_verify_san went from %d to %d, want it to count red's refused handshakes", before, after)
		}
		w.updateNode(t, "03b-green-node.json", w.tlsListener("green", "STRICT", callers...), nil)
		w.waitConverged(t)
		w.waitAll(t, red.host, "http://router.colors.local/", "green", "yellow")
	})

	t.Run("certificates rotate under load", func(t *testing.T) {
		first := w.serverCert(t, laptop, green.host.Addr.String()+":80")
		load := w.load(red, "http://router.colors.local/", loadRate)
		// Two renewals, at two thirds of the lifetime each, while the
		// load runs.
		serials := map[string]bool{first.Serial: true}
		var now certInfo
		var probed time.Time
		waitFor(t, "green's certificate renewed twice", 3*certLifetime, func() (bool, error) {
			// A handshake a second is plenty to see a renewal every 16 s.
			if time.Since(probed) < time.Second {
				return false, fmt.Errorf("%d certificates seen", len(serials))
			}
			probed = time.Now()
			now = w.serverCert(t, laptop, green.host.Addr.String()+":80")
			serials[now.Serial] = true
			return len(serials) >= 3, fmt.Errorf("%d certificates seen, now serial %s from %s", len(serials), now.Serial, now.NotBefore)
		})
		c := load.stop(t)
		t.Logf("leaf rotation: %d requests at %d/s, %d failed; green's serial %s -> %s", c.total(), loadRate, c.Errors, first.Serial, now.Serial)
		if c.Errors > 0 {
			t.Logf("during leaf rotation: %d of %d requests failed:\n%s", c.Errors, c.total(), strings.Join(c.Failures, "\n"))
			w.logFailures(t, red, green, yellow)
		}
		if c.Errors > 0 || c.total() < loadRate {
			t.Errorf("during leaf rotation: %d of %d requests failed, want none", c.Errors, c.total())
		}
	})

	t.Run("the CA rotates under load", func(t *testing.T) {
		old := w.serverCert(t, laptop, green.host.Addr.String()+":80")
		load := w.load(red, "http://router.colors.local/", loadRate)
		before := caRoots(t, w.weftCA(t, "status"))
		added := caRoots(t, w.weftCA(t, "add-root"))[0]
		if len(before) != 1 || !before[0].signing || added.signing {
			t.Fatalf("roots before %+v, added %+v: want one signing root, then a new one that does not sign yet", before, added)
		}
		w.waitConverged(t)
		w.weftCA(t, "activate", added.fingerprint)
		w.waitConverged(t)
		var now certInfo
		waitFor(t, "green's certificate issued by the new root", 10*time.Second, func() (bool, error) {
			now = w.serverCert(t, laptop, green.host.Addr.String()+":80")
			return now.Issuer != old.Issuer, fmt.Errorf("still issued by %s", now.Issuer)
		})
		w.weftCA(t, "remove-root", before[0].fingerprint)
		if roots := caRoots(t, w.weftCA(t, "status")); len(roots) != 1 || roots[0] != (caRoot{added.fingerprint, true}) {
			t.Errorf("roots after the rotation = %+v, want only %s, signing", roots, added.fingerprint)
		}
		w.waitConverged(t)
		// Some traffic after the old root is gone from every bundle.
		time.Sleep(2 * time.Second) // traffic, not a wait for a condition
		c := load.stop(t)
		t.Logf("CA rotation: %d requests at %d/s, %d failed; green's issuer %s -> %s", c.total(), loadRate, c.Errors, old.Issuer, now.Issuer)
		if c.Errors > 0 {
			t.Logf("during CA rotation: %d of %d requests failed:\n%s", c.Errors, c.total(), strings.Join(c.Failures, "\n"))
			w.logFailures(t, red, green, yellow)
		}
		if c.Errors > 0 || c.total() < loadRate {
			t.Errorf("during CA rotation: %d of %d requests failed, want none", c.Errors, c.total())
		}
		w.assertSplit(t, laptop, "http://"+gw.host.Addr.String()+"/router", map[string]float64{"green": 80, "yellow": 20})
	})
}

// logFailures logs the access log lines of the tasks' proxies that are
// not a 200, and their error counters, to tell a failed request's story.
func (w *world) logFailures(t *testing.T, tasks ...*task) {
	t.Helper()
	for _, tk := range tasks {
		var bad []string
		for _, l := range tk.accessLog(t) {
			if !strings.Contains(l, " 200 ") && !strings.HasSuffix(l, " 200") && !strings.Contains(l, `"response_code":200`) {
				bad = append(bad, l)
			}
		}
		t.Logf("%s: access log lines that are not 200 (%d):\n%s", tk.name, len(bad), lastLines(bad, 10))
		out, _, _ := run(context.Background(), tk.host, "sh", "-c", "curl -s localhost:9901/stats | grep -E 'ssl\\.(connection_error|fail)|rq_(5xx|retry)|cx_(destroy_remote_with_active_rq|connect_fail|protocol_error|drain_close|overflow|idle_timeout)|rx_reset|tx_reset|no_filter_chain_match|listener_(added|modified|removed)|header_timeout|update_(success|rejected)' | grep -v ': 0$'")
		t.Logf("%s: non-zero error counters:\n%s", tk.name, out)
	}
}

// stat sums the proxy's /stats counters whose names match re.
func (w *world) stat(t *testing.T, tk *task, re string) int {
	t.Helper()
	out, _, err := run(context.Background(), tk.host, "curl", "-sS", "http://localhost:9901/stats")
	if err != nil {
		t.Fatalf("%s /stats: %v", tk.name, err)
	}
	match := regexp.MustCompile(re)
	sum := 0
	for _, line := range strings.Split(out, "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if !ok || !match.MatchString(name) {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err == nil {
			sum += n
		}
	}
	return sum
}

// waitConverged waits until every connected proxy has ACKed what weft
// serves it, as /v1/proxies reports.
func (w *world) waitConverged(t *testing.T) {
	t.Helper()
	waitFor(t, "every proxy ACKs its configuration", 10*time.Second, func() (bool, error) {
		out := w.signedCurl(t, "/v1/proxies")
		var status struct {
			Proxies []struct {
				NodeID   string `json:"nodeId"`
				Replicas int    `json:"replicas"`
				Error    string `json:"error"`
				Types    map[string]struct {
					Version       string `json:"version"`
					AckedReplicas int    `json:"ackedReplicas"`
				} `json:"types"`
			} `json:"proxies"`
		}
		if err := json.Unmarshal([]byte(out), &status); err != nil {
			return false, fmt.Errorf("decode %q: %v", out, err)
		}
		for _, p := range status.Proxies {
			if p.Error != "" {
				return false, fmt.Errorf("%s: %s", p.NodeID, p.Error)
			}
			for typ, v := range p.Types {
				if v.AckedReplicas != p.Replicas {
					return false, fmt.Errorf("%s %s: version %s ACKed by %d of %d replicas", p.NodeID, typ, v.Version, v.AckedReplicas, p.Replicas)
				}
			}
		}
		return true, nil
	})
}

// weftCA runs `weft ca ARGS` in the control plane's namespace, signed with
// the test's key, and returns its output.
func (w *world) weftCA(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{w.weft, "ca", args[0], "--endpoint-url", w.api}, args[1:]...)
	cmd := w.ctl.Command(ctx, -1, argv...)
	cmd.Env = w.signedEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("weft ca %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// caRoot is one row of weft ca's table.
type caRoot struct {
	fingerprint string
	signing     bool
}

// caRoots reads the FINGERPRINT and SIGNING columns of weft ca's table.
func caRoots(t *testing.T, table string) []caRoot {
	t.Helper()
	var roots []caRoot
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] == "FINGERPRINT" || (f[1] != "true" && f[1] != "false") {
			continue
		}
		roots = append(roots, caRoot{fingerprint: f[0], signing: f[1] == "true"})
	}
	if len(roots) == 0 {
		t.Fatalf("weft ca printed no root:\n%s", table)
	}
	return roots
}

// certInfo is what the certinfo client prints of a server's certificate.
type certInfo struct {
	Serial    string    `json:"serial"`
	Issuer    string    `json:"issuer"`
	URIs      []string  `json:"uris"`
	DNSNames  []string  `json:"dns_names"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// serverCert reads the certificate the server at addr presents, from inside
// from (the handshake needs no client certificate to see it).
func (w *world) serverCert(t *testing.T, from *netns.Host, addr string) certInfo {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := from.Command(ctx, -1, self, addr)
	cmd.Env = append(os.Environ(), clientEnv+"=certinfo")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("certinfo %s from %s: %v", addr, from.Name, err)
	}
	var c certInfo
	if err := json.Unmarshal(out, &c); err != nil {
		t.Fatalf("certinfo output %q: %v", out, err)
	}
	return c
}

// loadRun is a load client running inside a task.
type loadRun struct {
	proc   *proc
	stdout *strings.Builder
}

// load starts GETs of url at rate per second from inside tk until stopped.
func (w *world) load(tk *task, url string, rate int) *loadRun {
	w.t.Helper()
	self, err := os.Executable()
	if err != nil {
		w.t.Fatal(err)
	}
	cmd := tk.host.Command(context.Background(), -1, self, url, strconv.Itoa(rate))
	cmd.Env = append(os.Environ(), clientEnv+"=load")
	l := &loadRun{stdout: &strings.Builder{}}
	cmd.Stdout = l.stdout
	p := &proc{name: "load " + url + " from " + tk.name, cmd: cmd, done: make(chan struct{}), tail: &tailBuffer{max: 10}}
	cmd.Stderr = p.tail
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }() // ends with the process, which stop ends
	w.t.Cleanup(p.stop)
	l.proc = p
	return l
}

// stop ends the load and returns what it counted.
func (l *loadRun) stop(t *testing.T) counts {
	t.Helper()
	l.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.proc.done:
	case <-time.After(30 * time.Second):
		l.proc.cmd.Process.Kill()
		<-l.proc.done
		t.Fatalf("load client did not stop on SIGTERM: %s", l.proc.tail)
	}
	var c counts
	if err := json.Unmarshal([]byte(l.stdout.String()), &c); err != nil {
		t.Fatalf("load output %q (%v): %v; stderr: %s", l.stdout.String(), l.proc.err, err, l.proc.tail)
	}
	return c
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
