// Package tutorial runs the seed tutorial ("App Mesh on Amazon ECS - Part
// 1") and the App Mesh conformance corpus through the real AWS CLI against
// weft.
package tutorial

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/store/bolt"
)

const (
	cliAccount = "111122223333"
	cliRegion  = "us-east-1"
)

// corpusDir is the repository's copy of the App Mesh examples corpus (real
// specs from AWS's public examples, ordered by each case's steps.json).
const corpusDir = "../../testdata/appmesh-examples"

// sharedDir is where the project's steering documents live beside the
// repository on a developer's machine: the seed tutorial and the original
// corpus. Tests that check our copies against them skip without it; the
// behaviour itself is tested from the copies in the repository.
const sharedDir = "../../../shared"

// sharedPath returns the path of a steering document, or skips the test when
// this checkout has none beside it.
func sharedPath(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(sharedDir, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s is not beside this checkout (%v): nothing to compare the repository's copy with", p, err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestCorpusCopyIsTheShared checks that the repository's corpus is exactly
// the steering repository's, file for file.
func TestCorpusCopyIsTheShared(t *testing.T) {
	orig := sharedPath(t, "conformance/appmesh-examples")
	err := filepath.WalkDir(orig, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(orig, path)
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(corpusDir, rel))
		if err != nil {
			return fmt.Errorf("the repository's corpus lacks %s: %w", rel, err)
		}
		if string(got) != string(want) {
			return fmt.Errorf("%s differs from %s", filepath.Join(corpusDir, rel), path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startWeft serves weft's App Mesh API (as weft server wires it) on a fresh
// store behind a socket and returns its URL.
func startWeft(t *testing.T, region string) string {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &api.Handler{AppMesh: meshapi.New(ops.New(st, ops.Config{Region: region}, log), meshapi.Config{DefaultAccount: cliAccount}, log)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// cliEnv is the environment the CLI runs with: credentials whose access key
// id is the calling account (weft's convention) and a region.
func cliEnv(acct, region string) map[string]string {
	return map[string]string{
		"AWS_ACCESS_KEY_ID":           acct,
		"AWS_SECRET_ACCESS_KEY":       "weft",
		"AWS_DEFAULT_REGION":          region,
		"AWS_PAGER":                   "",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	}
}

// cliResult is what one CLI command did.
type cliResult struct {
	RC     int    `json:"rc"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// decode parses JSON keeping numbers as written.
func decode(t *testing.T, what string, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v in %q", what, err, b)
	}
	return v
}

// tutorialCommands are the App Mesh commands of the tutorial's sections
// 1-4, in order, exactly as written there.
var tutorialCommands = []string{
	"aws appmesh create-mesh --cli-input-json file://01c-mesh.json",
	"aws appmesh create-virtual-node --cli-input-json file://02a-red-node.json",
	"aws appmesh create-virtual-service --cli-input-json file://02b-red-service.json",
	"aws appmesh create-virtual-node --cli-input-json file://02c-blue-node.json",
	"aws appmesh create-virtual-service --cli-input-json file://02d-blue-service.json",
	"aws appmesh create-virtual-node --cli-input-json file://03b-green-node.json",
	"aws appmesh create-virtual-node --cli-input-json file://03b-yellow-node.json",
	"aws appmesh create-virtual-router --cli-input-json file://03e-color-router.json",
	"aws appmesh create-route --cli-input-json file://03f-color-route.json",
	"aws appmesh create-virtual-service --cli-input-json file://03g-color-service.json",
	"aws appmesh update-virtual-node --cli-input-json file://03h-update-red.json",
	"aws appmesh create-virtual-gateway --cli-input-json file://04a-color-gateway.json",
	"aws appmesh create-gateway-route --cli-input-json file://04b-color-gateway-route-1.json",
	"aws appmesh create-gateway-route --cli-input-json file://04b-color-gateway-route-2.json",
}

// TestTutorialCommandsAreTheSeeds checks that tutorialCommands are the
// seed's own: every `aws appmesh` line of sections 1-4, in order.
func TestTutorialCommandsAreTheSeeds(t *testing.T) {
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
	got := regexp.MustCompile(`(?m)^aws appmesh .*$`).FindAllString(text, -1)
	if !slices.Equal(got, tutorialCommands) {
		t.Fatalf("the seed's App Mesh commands of sections 1-4 are\n%s\nthe test runs\n%s", strings.Join(got, "\n"), strings.Join(tutorialCommands, "\n"))
	}
}

// TestTutorialAWSCLI runs the tutorial's App Mesh commands with the `aws`
// program, verbatim, on the tutorial's own files, then checks what the
// describe-* commands print.
func TestTutorialAWSCLI(t *testing.T) { forEachCLI(t, testTutorialAWSCLI) }

func testTutorialAWSCLI(t *testing.T, prog cliProgram) {
	url := startWeft(t, cliRegion)
	env := os.Environ()
	for k, v := range cliEnv(cliAccount, cliRegion) {
		env = append(env, k+"="+v)
	}
	results := map[string]map[string]any{} // input file -> the Data the command answered
	for _, line := range tutorialCommands {
		args := append(strings.Fields(line)[1:], "--endpoint-url", url)
		cmd := prog.command(args...)
		cmd.Dir = "testdata"
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, stderr.String())
		}
		out := decode(t, line, stdout.Bytes())
		for _, v := range out {
			results[strings.TrimPrefix(args[3], "file://")] = v.(map[string]any)
		}
	}

	cli := startCLI(t, prog)
	abs, _ := filepath.Abs("testdata")
	describe := func(args ...string) map[string]any {
		t.Helper()
		res := cli.run(t, abs, cliEnv(cliAccount, cliRegion), append(append([]string{"appmesh"}, args...), "--endpoint-url", url)...)
		if res.RC != 0 {
			t.Fatalf("aws appmesh %s: rc %d: %s", strings.Join(args, " "), res.RC, res.Stderr)
		}
		for _, v := range decode(t, args[0], []byte(res.Stdout)) {
			return v.(map[string]any)
		}
		return nil
	}
	arn := "arn:aws:appmesh:" + cliRegion + ":" + cliAccount + ":mesh/color-mesh"
	checks := []struct {
		file    string // the input whose spec the resource must have
		args    []string
		arn     string
		version int
	}{
		{"01c-mesh.json", []string{"describe-mesh", "--mesh-name", "color-mesh"}, arn, 1},
		{"03h-update-red.json", []string{"describe-virtual-node", "--mesh-name", "color-mesh", "--virtual-node-name", "red"}, arn + "/virtualNode/red", 2},
		{"02c-blue-node.json", []string{"describe-virtual-node", "--mesh-name", "color-mesh", "--virtual-node-name", "blue"}, arn + "/virtualNode/blue", 1},
		{"03b-green-node.json", []string{"describe-virtual-node", "--mesh-name", "color-mesh", "--virtual-node-name", "green"}, arn + "/virtualNode/green", 1},
		{"03b-yellow-node.json", []string{"describe-virtual-node", "--mesh-name", "color-mesh", "--virtual-node-name", "yellow"}, arn + "/virtualNode/yellow", 1},
		{"02b-red-service.json", []string{"describe-virtual-service", "--mesh-name", "color-mesh", "--virtual-service-name", "red.colors.local"}, arn + "/virtualService/red.colors.local", 1},
		{"02d-blue-service.json", []string{"describe-virtual-service", "--mesh-name", "color-mesh", "--virtual-service-name", "blue.colors.local"}, arn + "/virtualService/blue.colors.local", 1},
		{"03g-color-service.json", []string{"describe-virtual-service", "--mesh-name", "color-mesh", "--virtual-service-name", "router.colors.local"}, arn + "/virtualService/router.colors.local", 1},
		{"03e-color-router.json", []string{"describe-virtual-router", "--mesh-name", "color-mesh", "--virtual-router-name", "color-router"}, arn + "/virtualRouter/color-router", 1},
		{"03f-color-route.json", []string{"describe-route", "--mesh-name", "color-mesh", "--virtual-router-name", "color-router", "--route-name", "color-route"}, arn + "/virtualRouter/color-router/route/color-route", 1},
		{"04a-color-gateway.json", []string{"describe-virtual-gateway", "--mesh-name", "color-mesh", "--virtual-gateway-name", "color-gateway"}, arn + "/virtualGateway/color-gateway", 1},
		{"04b-color-gateway-route-1.json", []string{"describe-gateway-route", "--mesh-name", "color-mesh", "--virtual-gateway-name", "color-gateway", "--gateway-route-name", "color-gateway-route-1"}, arn + "/virtualGateway/color-gateway/gatewayRoute/color-gateway-route-1", 1},
		{"04b-color-gateway-route-2.json", []string{"describe-gateway-route", "--mesh-name", "color-mesh", "--virtual-gateway-name", "color-gateway", "--gateway-route-name", "color-gateway-route-2"}, arn + "/virtualGateway/color-gateway/gatewayRoute/color-gateway-route-2", 1},
	}
	for _, c := range checks {
		t.Run(c.args[0]+"/"+c.args[len(c.args)-1], func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			in := decode(t, c.file, b)
			got := describe(c.args...)
			sameSpec(t, c.file, got["spec"], in["spec"])
			md := got["metadata"].(map[string]any)
			if md["arn"] != c.arn || md["version"] != json.Number(fmt.Sprint(c.version)) ||
				md["meshOwner"] != cliAccount || md["resourceOwner"] != cliAccount || len(fmt.Sprint(md["uid"])) != 36 {
				t.Errorf("metadata %v; want arn %s version %d", md, c.arn, c.version)
			}
			if st := got["status"].(map[string]any)["status"]; st != "ACTIVE" {
				t.Errorf("status %v", st)
			}
			// The command that made the resource answered what describe
			// answers (for red, the update did).
			if made := results[c.file]; made != nil && !reflect.DeepEqual(made["metadata"], got["metadata"]) {
				t.Errorf("%s answered metadata %v; describe answers %v", c.file, made["metadata"], got["metadata"])
			}
		})
	}
	res := cli.run(t, abs, cliEnv(cliAccount, cliRegion), "appmesh", "list-virtual-nodes", "--mesh-name", "color-mesh", "--endpoint-url", url)
	var list struct {
		VirtualNodes []struct {
			VirtualNodeName string `json:"virtualNodeName"`
		} `json:"virtualNodes"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &list); err != nil || len(list.VirtualNodes) != 4 {
		t.Fatalf("list-virtual-nodes: %v %s", err, res.Stdout)
	}
}

// sameSpec checks that a described spec is the spec that was sent (a mesh
// sent without one reads back as {}).
func sameSpec(t *testing.T, what string, got, sent any) {
	t.Helper()
	if sent == nil {
		sent = map[string]any{}
	}
	if !reflect.DeepEqual(got, sent) {
		g, _ := json.Marshal(got)
		s, _ := json.Marshal(sent)
		t.Fatalf("%s: spec does not round-trip\n sent %s\n  got %s", what, s, g)
	}
}

// corpusStep is one call of a case's steps.json.
type corpusStep struct {
	Op      string `json:"op"`
	Input   string `json:"input"`
	Account string `json:"account"`
}

// describeArgs returns the describe command that reads back the resource
// an input names.
func describeArgs(op string, in map[string]any) []string {
	kind := op[strings.Index(op, "-")+1:]
	args := []string{"describe-" + kind}
	flags := map[string]string{
		"meshName": "--mesh-name", "meshOwner": "--mesh-owner", "virtualNodeName": "--virtual-node-name",
		"virtualServiceName": "--virtual-service-name", "virtualRouterName": "--virtual-router-name",
		"routeName": "--route-name", "virtualGatewayName": "--virtual-gateway-name", "gatewayRouteName": "--gateway-route-name",
	}
	keys := make([]string, 0, len(flags))
	for k := range flags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v, ok := in[k].(string); ok {
			args = append(args, flags[k], v)
		}
	}
	return args
}

// TestConformanceCorpusAWSCLI runs every case of the App Mesh conformance
// corpus (real specs of AWS's examples) through the AWS CLI, each on a
// fresh server: every step must succeed, every created or updated spec
// must read back unchanged, and a case's cleanup must leave no mesh.
func TestConformanceCorpusAWSCLI(t *testing.T) { forEachCLI(t, testConformanceCorpusAWSCLI) }

func testConformanceCorpusAWSCLI(t *testing.T, prog cliProgram) {
	root, err := filepath.Abs(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	cases, err := filepath.Glob(filepath.Join(root, "*", "steps.json"))
	if err != nil || len(cases) != 28 {
		t.Fatalf("want the 28 cases of %s, found %d: %v", root, len(cases), err)
	}
	cli := startCLI(t, prog)
	ops := 0
	for _, stepsFile := range cases {
		dir := filepath.Dir(stepsFile)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			b, err := os.ReadFile(stepsFile)
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				Setup   []corpusStep `json:"setup"`
				Cleanup []corpusStep `json:"cleanup"`
			}
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			url := startWeft(t, "us-west-2")
			accounts := map[string]bool{cliAccount: true}
			for i, st := range slices.Concat(c.Setup, c.Cleanup) {
				acct := cmp.Or(st.Account, cliAccount)
				accounts[acct] = true
				env := cliEnv(acct, "us-west-2")
				what := fmt.Sprintf("step %d: aws appmesh %s --cli-input-json file://%s (account %s)", i+1, st.Op, st.Input, acct)
				res := cli.run(t, dir, env, "appmesh", st.Op, "--cli-input-json", "file://"+st.Input, "--endpoint-url", url)
				if res.RC != 0 {
					t.Fatalf("%s: rc %d: %s", what, res.RC, res.Stderr)
				}
				ops++
				if !strings.HasPrefix(st.Op, "create-") && !strings.HasPrefix(st.Op, "update-") {
					continue
				}
				raw, err := os.ReadFile(filepath.Join(dir, st.Input))
				if err != nil {
					t.Fatal(err)
				}
				in := decode(t, st.Input, raw)
				for _, data := range decode(t, what, []byte(res.Stdout)) {
					sameSpec(t, what+" (answer)", data.(map[string]any)["spec"], in["spec"])
				}
				args := append(append([]string{"appmesh"}, describeArgs(st.Op, in)...), "--endpoint-url", url)
				d := cli.run(t, dir, env, args...)
				if d.RC != 0 {
					t.Fatalf("%s: aws %s: rc %d: %s", what, strings.Join(args, " "), d.RC, d.Stderr)
				}
				for _, data := range decode(t, what, []byte(d.Stdout)) {
					sameSpec(t, what+" (describe)", data.(map[string]any)["spec"], in["spec"])
				}
			}
			if len(c.Cleanup) == 0 {
				return
			}
			for acct := range accounts {
				res := cli.run(t, dir, cliEnv(acct, "us-west-2"), "appmesh", "list-meshes", "--endpoint-url", url)
				var l struct {
					Meshes []any `json:"meshes"`
				}
				if res.RC != 0 || json.Unmarshal([]byte(res.Stdout), &l) != nil || len(l.Meshes) != 0 {
					t.Fatalf("after cleanup, account %s: rc %d, %s %s", acct, res.RC, res.Stdout, res.Stderr)
				}
			}
		})
	}
	t.Logf("%d cases, %d operations", len(cases), ops)
}
