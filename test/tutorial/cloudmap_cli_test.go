package tutorial

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/dns"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// cloudMapCommands are the Cloud Map commands of the tutorial's sections
// 1-4, in order, exactly as written there.
var cloudMapCommands = []string{
	"aws servicediscovery create-private-dns-namespace --cli-input-json file://01a-namespace.json",
	"aws servicediscovery create-service --cli-input-json file://01b-red.json",
	"aws servicediscovery create-service --cli-input-json file://01b-blue.json",
	"aws servicediscovery create-service --cli-input-json file://03a-router.json",
	"aws servicediscovery create-service --cli-input-json file://03a-yellow.json",
}

// TestCloudMapCommandsAreTheSeeds checks that cloudMapCommands are the
// seed's own: every line of sections 1-4 that starts `aws servicediscovery`.
func TestCloudMapCommandsAreTheSeeds(t *testing.T) {
	dir := sharedPath(t, "seeds")
	files, _ := filepath.Glob(filepath.Join(dir, "003_*.txt"))
	if len(files) != 1 {
		t.Fatalf("want one seed 003 in %s, found %v", dir, files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if i := strings.Index(text, "\n## 5."); i >= 0 {
		text = text[:i]
	}
	got := regexp.MustCompile(`(?m)^aws servicediscovery .*$`).FindAllString(text, -1)
	if !slices.Equal(got, cloudMapCommands) {
		t.Fatalf("the seed's Cloud Map commands of sections 1-4 are\n%s\nthe test runs\n%s", strings.Join(got, "\n"), strings.Join(cloudMapCommands, "\n"))
	}
}

// cloudMapWeft is weft's Cloud Map API and DNS server on one store.
type cloudMapWeft struct {
	url string
	st  *bolt.Store
	dns *dns.Server
}

func startCloudMap(t *testing.T) *cloudMapWeft {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	reg := cloudmap.NewRegistry(st, cloudmap.Config{Region: cliRegion, AccountID: cliAccount})
	srv := httptest.NewServer(&api.Handler{CloudMap: cloudmapapi.New(reg, log)})
	d, err := dns.Listen("127.0.0.1:0", dns.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, st) }() // ends with cancel below
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("dns: %v", err)
		}
		st.Close()
	})
	return &cloudMapWeft{url: srv.URL, st: st, dns: d}
}

// sync waits until DNS answers from every write made so far.
func (w *cloudMapWeft) sync(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.dns.WaitRevision(ctx, w.st.Revision()); err != nil {
		t.Fatalf("DNS did not catch up with revision %d: %v", w.st.Revision(), err)
	}
}

// dig resolves name with Debian's dig against weft's DNS server, and
// returns the status and the answers' values, sorted.
func dig(t *testing.T, server, name string) (string, []string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(server)
	out, err := exec.Command("dig", "@"+host, "-p", port, "+time=5", "+tries=1", "+noall", "+comments", "+answer", name, "A").CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", name, err, out)
	}
	status := regexp.MustCompile(`status: (\w+)`).FindStringSubmatch(string(out))
	if status == nil {
		t.Fatalf("dig %s: no status in\n%s", name, out)
	}
	var values []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 5 && !strings.HasPrefix(line, ";") && f[3] == "A" {
			if f[1] != "300" {
				t.Errorf("dig %s: TTL %s, want the service's 300", name, f[1])
			}
			values = append(values, f[4])
		}
	}
	slices.Sort(values)
	return status[1], values
}

// resolve resolves name with Go's own resolver sent to weft's DNS server.
func resolve(t *testing.T, server, name string) []string {
	t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, server)
	}}
	ips, err := r.LookupHost(context.Background(), name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("resolve %s: %v", name, err)
	}
	slices.Sort(ips)
	return ips
}

// ecsTask is a task ECS runs for one of the tutorial's ECS services, which
// ECS registers in the service's Cloud Map registry.
type ecsTask struct {
	id, ip           string
	registry         string // the Cloud Map service, by name
	service, family  string // the ECS service and task definition family
	availabilityZone string
}

// TestTutorialCloudMapAWSCLI runs the tutorial's Cloud Map commands with
// the `aws` program, verbatim, on the tutorial's files with their
// placeholders filled in as a reader would; registers each task as ECS
// would; and resolves the tutorial's names through weft's DNS server.
func TestTutorialCloudMapAWSCLI(t *testing.T) { forEachCLI(t, testTutorialCloudMapAWSCLI) }

func testTutorialCloudMapAWSCLI(t *testing.T, prog cliProgram) {
	w := startCloudMap(t)
	dir := t.TempDir()
	env := os.Environ()
	for k, v := range cliEnv(cliAccount, cliRegion) {
		env = append(env, k+"="+v)
	}
	aws := func(line string) map[string]any {
		t.Helper()
		cmd := prog.command(append(strings.Fields(line)[1:], "--endpoint-url", w.url)...)
		cmd.Dir, cmd.Env = dir, env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, stderr.String())
		}
		return decode(t, line, stdout.Bytes())
	}
	// The reader's edits: their VPC, then the namespace id once known.
	fill := func(file, placeholder, value string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(placeholder)) {
			t.Fatalf("%s has no %s", file, placeholder)
		}
		if err := os.WriteFile(filepath.Join(dir, file), bytes.ReplaceAll(b, []byte(placeholder), []byte(value)), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	fill("01a-namespace.json", "<vpc-id>", "vpc-0a1b2c3d4e5f67890")
	out := aws(cloudMapCommands[0])
	opID, _ := out["OperationId"].(string)
	op := aws("aws servicediscovery get-operation --operation-id " + opID)["Operation"].(map[string]any)
	nsID, _ := op["Targets"].(map[string]any)["NAMESPACE"].(string)
	if op["Status"] != "SUCCESS" || op["Type"] != "CREATE_NAMESPACE" || !strings.HasPrefix(nsID, "ns-") {
		t.Fatalf("get-operation: %v", op)
	}

	services := map[string]map[string]any{} // Cloud Map service name -> what create-service answered
	for _, line := range cloudMapCommands[1:] {
		file := strings.TrimPrefix(strings.Fields(line)[4], "file://")
		fill(file, "<cloud-map-namespace-id>", nsID)
		svc := aws(line)["Service"].(map[string]any)
		services[svc["Name"].(string)] = svc
	}

	// get-service answers what the tutorial shows.
	red := services["red"]
	got := aws("aws servicediscovery get-service --id " + red["Id"].(string))["Service"].(map[string]any)
	wantDNS := map[string]any{"NamespaceId": nsID, "RoutingPolicy": "MULTIVALUE", "DnsRecords": []any{map[string]any{"Type": "A", "TTL": json.Number("300")}}}
	if got["Id"] != red["Id"] || got["Arn"] != "arn:aws:servicediscovery:"+cliRegion+":"+cliAccount+":service/"+red["Id"].(string) ||
		got["Name"] != "red" || got["NamespaceId"] != nsID || got["Description"] != "Red color service." || got["Type"] != "DNS_HTTP" ||
		fmt.Sprint(got["DnsConfig"]) != fmt.Sprint(wantDNS) || got["CreateDate"] == nil || got["CreatorRequestId"] == nil {
		t.Errorf("get-service red:\n%v\nwant the tutorial's fields, DnsConfig %v", got, wantDNS)
	}

	// ECS registers each task of the tutorial's ECS services (02f, 03d)
	// with the task's address and its own attributes.
	tasks := []ecsTask{
		{"0f6b2c1e2d3a4b5c6d7e8f9a0b1c2d3e", "10.0.1.10", "red", "red-svc", "red_node", "us-east-1a"},
		{"1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d", "10.0.1.11", "blue", "blue-svc", "blue_node", "us-east-1b"},
		{"2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e", "10.0.1.12", "router", "green-svc", "green_node", "us-east-1a"},
		{"3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f", "10.0.1.13", "yellow", "yellow-svc", "yellow_node", "us-east-1b"},
	}
	cli := startCLI(t, prog)
	run := func(env map[string]string, args ...string) cliResult {
		t.Helper()
		return cli.run(t, dir, env, append(append([]string{"servicediscovery"}, args...), "--endpoint-url", w.url)...)
	}
	base := cliEnv(cliAccount, cliRegion)
	for _, task := range tasks {
		attrs := strings.Join([]string{
			"AWS_INSTANCE_IPV4=" + task.ip, "AVAILABILITY_ZONE=" + task.availabilityZone, "AWS_INIT_HEALTH_STATUS=HEALTHY",
			"ECS_CLUSTER_NAME=color-cluster", "ECS_SERVICE_NAME=" + task.service, "ECS_TASK_DEFINITION_FAMILY=" + task.family, "REGION=" + cliRegion,
		}, ",")
		// serviceRegistries name the Cloud Map service by its ARN.
		res := run(base, "register-instance", "--service-id", services[task.registry]["Arn"].(string), "--instance-id", task.id, "--attributes", attrs)
		if res.RC != 0 {
			t.Fatalf("register-instance %s: %s", task.registry, res.Stderr)
		}
	}
	w.sync(t)

	_, haveDig := exec.LookPath("dig")
	if haveDig != nil && os.Getenv("WEFT_CI") == "1" {
		t.Fatal("dig is not installed (scripts/test.sh installs dnsutils)")
	}
	for _, task := range tasks {
		name := task.registry + ".colors.local"
		if got := resolve(t, w.dns.Addr(), name); !slices.Equal(got, []string{task.ip}) {
			t.Errorf("Go resolver: %s = %v, want %s", name, got, task.ip)
		}
		if haveDig == nil {
			if status, got := dig(t, w.dns.Addr(), name); status != "NOERROR" || !slices.Equal(got, []string{task.ip}) {
				t.Errorf("dig %s: %s %v, want %s", name, status, got, task.ip)
			}
		}
	}

	// DiscoverInstances through the CLI. The CLI sends it to
	// data-<endpoint host> (the model's host prefix), so with the plain
	// endpoint it dials data-127.0.0.1, which does not resolve. An endpoint
	// with a user name (http://weft@127.0.0.1:port) takes the prefix on the
	// user name instead, in every CLI version: the request reaches weft, its
	// Host and signature name 127.0.0.1. That endpoint serves every other
	// command as well.
	u, err := url.Parse(w.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("weft")
	userURL := u.String()
	discover := func(env map[string]string, endpoint string) cliResult {
		t.Helper()
		return cli.run(t, dir, env, "servicediscovery", "discover-instances", "--namespace-name", "colors.local", "--service-name", "red", "--endpoint-url", endpoint)
	}
	checkDiscovered := func(what string, res cliResult) {
		t.Helper()
		if res.RC != 0 {
			t.Fatalf("discover-instances %s: rc %d: %s", what, res.RC, res.Stderr)
		}
		var disc struct {
			Instances []struct {
				InstanceId   string
				HealthStatus string
				Attributes   map[string]string
			}
		}
		if err := json.Unmarshal([]byte(res.Stdout), &disc); err != nil || len(disc.Instances) != 1 ||
			disc.Instances[0].InstanceId != tasks[0].id || disc.Instances[0].Attributes["ECS_SERVICE_NAME"] != "red-svc" || disc.Instances[0].HealthStatus != "UNKNOWN" {
			t.Errorf("discover-instances %s: %v %s", what, err, res.Stdout)
		}
	}
	checkDiscovered("with --endpoint-url "+userURL, discover(base, userURL))
	if res := cli.run(t, dir, base, "servicediscovery", "get-service", "--id", red["Id"].(string), "--endpoint-url", userURL); res.RC != 0 || !strings.Contains(res.Stdout, red["Id"].(string)) {
		t.Errorf("get-service with --endpoint-url %s: rc %d: %s %s", userURL, res.RC, res.Stdout, res.Stderr)
	}
	// pip's CLI v1 (botocore from 2025 on, as boto3) can turn
	// the prefix off; the v2 that Debian ships (2.9.19) has no such setting.
	noPrefix := cliEnv(cliAccount, cliRegion)
	noPrefix["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "true"
	if prog.major() == "1" {
		checkDiscovered("with AWS_DISABLE_HOST_PREFIX_INJECTION=true", discover(noPrefix, w.url))
	}
	withPrefix := cliEnv(cliAccount, cliRegion)
	withPrefix["AWS_MAX_ATTEMPTS"] = "1"
	if res := discover(withPrefix, w.url); res.RC == 0 || !strings.Contains(res.Stderr, "data-127.0.0.1") {
		t.Errorf("discover-instances with the host prefix: rc %d, %s; want a failure to reach data-127.0.0.1", res.RC, res.Stderr)
	}

	// Bad input changes nothing.
	rev := w.st.Revision()
	failures := []struct {
		args []string
		code string
	}{
		{[]string{"delete-namespace", "--id", nsID}, "ResourceInUse"},
		{[]string{"delete-service", "--id", red["Id"].(string)}, "ResourceInUse"},
		{[]string{"get-service", "--id", "srv-0000000000000000"}, "ServiceNotFound"},
		{[]string{"update-instance-custom-health-status", "--service-id", red["Id"].(string), "--instance-id", tasks[0].id, "--status", "UNHEALTHY"}, "CustomHealthNotFound"},
		{[]string{"register-instance", "--service-id", red["Id"].(string), "--instance-id", "x", "--attributes", "AWS_INSTANCE_PORT=80"}, "InvalidInput"},
	}
	for _, f := range failures {
		if res := run(base, f.args...); res.RC == 0 || !strings.Contains(res.Stderr, "("+f.code+")") {
			t.Errorf("%s: rc %d, %s; want %s", f.args[0], res.RC, res.Stderr, f.code)
		}
	}
	if w.st.Revision() != rev {
		t.Errorf("failed commands wrote: revision %d -> %d", rev, w.st.Revision())
	}

	// Deregistering a task takes its name out of DNS.
	if res := run(base, "deregister-instance", "--service-id", red["Id"].(string), "--instance-id", tasks[0].id); res.RC != 0 {
		t.Fatalf("deregister-instance: %s", res.Stderr)
	}
	w.sync(t)
	if got := resolve(t, w.dns.Addr(), "red.colors.local"); got != nil {
		t.Errorf("after deregistering red's task, red.colors.local = %v", got)
	}
	if haveDig == nil {
		if status, got := dig(t, w.dns.Addr(), "red.colors.local"); status != "NXDOMAIN" || got != nil {
			t.Errorf("dig red.colors.local after deregistering: %s %v", status, got)
		}
	}

	// A service with a custom health check: marking its instance unhealthy
	// takes it out of DNS, healthy brings it back.
	res := run(base, "create-service", "--name", "purple", "--namespace-id", nsID,
		"--dns-config", "RoutingPolicy=MULTIVALUE,DnsRecords=[{Type=A,TTL=300}]", "--health-check-custom-config", "FailureThreshold=1")
	if res.RC != 0 {
		t.Fatalf("create-service purple: %s", res.Stderr)
	}
	purple := decode(t, "create-service", []byte(res.Stdout))["Service"].(map[string]any)["Id"].(string)
	if res := run(base, "register-instance", "--service-id", purple, "--instance-id", "p1", "--attributes", "AWS_INSTANCE_IPV4=10.0.1.20"); res.RC != 0 {
		t.Fatalf("register-instance purple: %s", res.Stderr)
	}
	for _, status := range []string{"UNHEALTHY", "HEALTHY"} {
		if res := run(base, "update-instance-custom-health-status", "--service-id", purple, "--instance-id", "p1", "--status", status); res.RC != 0 {
			t.Fatalf("update-instance-custom-health-status %s: %s", status, res.Stderr)
		}
		w.sync(t)
		want := []string{"10.0.1.20"}
		if status == "UNHEALTHY" {
			want = nil
		}
		if got := resolve(t, w.dns.Addr(), "purple.colors.local"); !slices.Equal(got, want) {
			t.Errorf("purple.colors.local with its instance %s = %v, want %v", status, got, want)
		}
		if haveDig == nil {
			if _, got := dig(t, w.dns.Addr(), "purple.colors.local"); !slices.Equal(got, want) {
				t.Errorf("dig purple.colors.local with its instance %s = %v, want %v", status, got, want)
			}
		}
	}
}
