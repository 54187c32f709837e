package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// aws runs the AWS CLI inside the control plane's namespace against weft,
// with credentials and region of its own so the machine's AWS config never
// matters, and decodes its JSON output into out (nil: ignored).
func (w *world) aws(out any, args ...string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{"aws", "--endpoint-url", w.api, "--output", "json"}, args...)
	cmd := w.ctl.Command(ctx, -1, argv...)
	cmd.Env = append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+accessKeyID, "AWS_SECRET_ACCESS_KEY="+secretAccessKey, "AWS_SESSION_TOKEN=",
		"AWS_DEFAULT_REGION="+w.region, "AWS_REGION="+w.region, "AWS_PAGER=",
		"AWS_CONFIG_FILE="+filepath.Join(w.tmp, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(w.tmp, "no-aws-credentials"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		w.t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			w.t.Fatalf("aws %s: decode output: %v\n%s", strings.Join(args, " "), err, stdout.String())
		}
	}
}

// The test's access key: the only key of the credentials file weft server
// runs with, allowed everything.
const (
	accessKeyID     = "AKIAWEFTE2E"
	secretAccessKey = "weft-e2e-secret-key"
)

// writeAuthFile writes the credentials file and returns its path.
func (w *world) writeAuthFile() string {
	w.t.Helper()
	p := filepath.Join(w.tmp, "keys.yaml")
	keys := fmt.Sprintf(`keys:
  - id: %s
    secret: %s
    account: "%s"
    allow:
      - actions: ["appmesh:*", "servicediscovery:*", "weft:*"]
        resources: ["*"]
`, accessKeyID, secretAccessKey, w.account)
	if err := os.WriteFile(p, []byte(keys), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// signedEnv is the environment of weft's client commands run by the test:
// the test's key, as an operator's shell would have it.
func (w *world) signedEnv() []string {
	return append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKeyID, "AWS_SECRET_ACCESS_KEY="+secretAccessKey,
		"AWS_SESSION_TOKEN=", "AWS_REGION="+w.region)
}

// joinToken creates a join token for the proxy of task name (node or
// gateway arn) with weft token create, writes it where the proxy's uid
// can read it, and returns the file's path.
func (w *world) joinToken(t *testing.T, name, arn string, uid int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := w.ctl.Command(ctx, -1, w.weft, "token", "create", "--resource", arn, "--ttl", "2h", "--endpoint-url", w.api)
	cmd.Env = w.signedEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("weft token create --resource %s: %v\n%s", arn, err, stderr.String())
	}
	// The test's temporary directory is root's alone; the proxy's UID
	// reaches its own token through a directory it may traverse.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("weft-e2e-tokens-%d", os.Getpid()))
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	w.t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, name+".token")
	if err := os.WriteFile(p, stdout.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// signedCurl GETs one of weft's own endpoints from the control plane's
// namespace, signed with the test's key as weft's endpoints require with a
// credentials file.
func (w *world) signedCurl(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errOut, err := run(ctx, w.ctl, "curl", "-sS", "--fail-with-body", "--max-time", "10",
		"--aws-sigv4", "aws:amz:"+w.region+":weft", "--user", accessKeyID+":"+secretAccessKey, w.api+path)
	if err != nil {
		t.Fatalf("signed GET %s: %v: %s%s", path, err, out, errOut)
	}
	return out
}

// input writes the tutorial's JSON file name with its placeholders replaced
// as a reader would, and returns the file:// argument for --cli-input-json.
func (w *world) input(name string, replace ...string) string {
	w.t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tutorial", "testdata", name))
	if err != nil {
		w.t.Fatal(err)
	}
	s := strings.NewReplacer(replace...).Replace(string(b))
	if strings.Contains(s, "<") {
		w.t.Fatalf("%s still has a placeholder after substitution:\n%s", name, s)
	}
	return w.writeInput(name, []byte(s))
}

// writeInput writes b as a CLI input file and returns its file:// argument.
func (w *world) writeInput(name string, b []byte) string {
	w.t.Helper()
	p := filepath.Join(w.tmp, "input", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		w.t.Fatal(err)
	}
	return "file://" + p
}

// jsonInput reads a tutorial JSON file into a generic value, for the steps
// that the tutorial does in the console ("Edit", change, "Save").
func jsonInput(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tutorial", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// waitOperation polls Cloud Map's GetOperation until the operation
// succeeds, as the tutorial suggests, and returns its targets.
func (w *world) waitOperation(id string) map[string]string {
	w.t.Helper()
	var targets map[string]string
	waitFor(w.t, "operation "+id, 30*time.Second, func() (bool, error) {
		var out struct {
			Operation struct {
				Status       string
				ErrorMessage string
				Targets      map[string]string
			}
		}
		w.aws(&out, "servicediscovery", "get-operation", "--operation-id", id)
		switch out.Operation.Status {
		case "SUCCESS":
			targets = out.Operation.Targets
			return true, nil
		case "FAIL":
			w.t.Fatalf("operation %s failed: %s", id, out.Operation.ErrorMessage)
		}
		return false, fmt.Errorf("status %s", out.Operation.Status)
	})
	return targets
}
