package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/xds/lrs"
)

// authFile: an administrator; a key of account 444455556666 allowed mesh
// "a" only; a key whose id is 12 digits but whose account is another.
const authFile = `
keys:
  - id: AKIDADMIN
    secret: admin-secret
    account: "111122223333"
    user: admin
    allow:
      - actions: ["appmesh:*", "servicediscovery:*", "weft:*"]
        resources: ["*"]
  - id: AKIDMESHA
    secret: mesh-a-secret
    account: "444455556666"
    allow:
      - actions: ["appmesh:*"]
        resources: ["arn:aws:appmesh:*:444455556666:mesh/a", "arn:aws:appmesh:*:444455556666:mesh/a/*"]
      - actions: ["weft:CreateToken"]
        resources: ["arn:aws:appmesh:*:444455556666:mesh/a/virtualNode/*"]
  - id: "123456789012"
    secret: digits-secret
    account: "777788889999"
    allow:
      - actions: ["appmesh:*"]
        resources: ["*"]
`

type authEnv struct {
	url string
	srv *httptest.Server
	st  store.Store
	sec *security
	cfg Config
}

// newAuthEnv serves the API as weft server does, with the credentials
// file content (none when ""), on a real listener.
func newAuthEnv(t testing.TB, file string) *authEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := Config{Region: "us-east-1", AccountID: "111122223333"}
	if file != "" {
		cfg.AuthFile = filepath.Join(dir, "auth.yaml")
		if err := os.WriteFile(cfg.AuthFile, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	sec, err := newSecurity(t.Context(), st, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.stop)
	ts := httptest.NewServer(newHandler(st, cfg, log, prometheus.NewRegistry(), nil, sec, nil, nil))
	t.Cleanup(ts.Close)
	return &authEnv{url: ts.URL, srv: ts, st: st, sec: sec, cfg: cfg}
}

func (e *authEnv) mesh(id, secret string) *sdk.Client {
	return sdk.New(sdk.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(e.url), RetryMaxAttempts: 1,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
		}),
	})
}

func (e *authEnv) cloudMap(id, secret string) *sd.Client {
	return sd.New(sd.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(e.url), RetryMaxAttempts: 1,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
		}),
	})
}

// wantAPIError checks an SDK error's code and that its message contains
// msg.
func wantAPIError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want %s", err, code)
	}
	if ae.ErrorCode() != code || !strings.Contains(ae.ErrorMessage(), msg) {
		t.Fatalf("got %s %q, want %s containing %q", ae.ErrorCode(), ae.ErrorMessage(), code, msg)
	}
}

func TestAPISigV4(t *testing.T) {
	e := newAuthEnv(t, authFile)
	ctx := t.Context()
	admin := e.mesh("AKIDADMIN", "admin-secret")

	t.Run("right key", func(t *testing.T) {
		out, err := admin.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(out.Mesh.Metadata.MeshOwner); got != "111122223333" {
			t.Fatalf("meshOwner %s", got)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		_, err := e.mesh("AKIDADMIN", "wrong-secret").ListMeshes(ctx, &sdk.ListMeshesInput{})
		wantAPIError(t, err, "InvalidSignatureException", "The request signature we calculated does not match")
	})
	t.Run("unknown key", func(t *testing.T) {
		_, err := e.mesh("AKIDNOBODY", "admin-secret").ListMeshes(ctx, &sdk.ListMeshesInput{})
		wantAPIError(t, err, "UnrecognizedClientException", "The security token included in the request is invalid")
	})
	t.Run("missing", func(t *testing.T) {
		c := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.url), RetryMaxAttempts: 1, Credentials: aws.AnonymousCredentials{}})
		_, err := c.ListMeshes(ctx, &sdk.ListMeshesInput{})
		wantAPIError(t, err, "MissingAuthenticationTokenException", "Missing Authentication Token")
	})
	t.Run("account from the key", func(t *testing.T) {
		// Without a credentials file a 12-digit key id is the account;
		// with one, the key's account is.
		out, err := e.mesh("123456789012", "digits-secret").CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("d")})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(out.Mesh.Metadata.MeshOwner); got != "777788889999" {
			t.Fatalf("meshOwner %s, want the key's account 777788889999", got)
		}
	})
	t.Run("one mesh only", func(t *testing.T) {
		a := e.mesh("AKIDMESHA", "mesh-a-secret")
		if _, err := a.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("a")}); err != nil {
			t.Fatalf("create mesh a: %v", err)
		}
		_, err := a.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("b")})
		wantAPIError(t, err, "AccessDeniedException", "User: arn:aws:iam::444455556666:user/AKIDMESHA is not authorized to perform: appmesh:CreateMesh on resource: arn:aws:appmesh:us-east-1:444455556666:mesh/b")
		node := &sdk.CreateVirtualNodeInput{MeshName: aws.String("a"), VirtualNodeName: aws.String("n"), Spec: &types.VirtualNodeSpec{}}
		if _, err := a.CreateVirtualNode(ctx, node); err != nil {
			t.Fatalf("create node in a: %v", err)
		}
		if out, err := a.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: aws.String("a")}); err != nil || len(out.VirtualNodes) != 1 {
			t.Fatalf("list a: %v", err)
		}
		// Mesh m belongs to 111122223333: reaching it as its owner is
		// another resource, not allowed.
		_, err = a.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: aws.String("m"), MeshOwner: aws.String("111122223333")})
		wantAPIError(t, err, "AccessDeniedException", "appmesh:ListVirtualNodes on resource: arn:aws:appmesh:us-east-1:111122223333:mesh/m")
		_, err = a.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("b"), VirtualNodeName: aws.String("n"), Spec: &types.VirtualNodeSpec{}})
		wantAPIError(t, err, "AccessDeniedException", "appmesh:CreateVirtualNode on resource: arn:aws:appmesh:us-east-1:444455556666:mesh/b/virtualNode/n")
		_, err = a.ListMeshes(ctx, &sdk.ListMeshesInput{})
		wantAPIError(t, err, "AccessDeniedException", "appmesh:ListMeshes on resource: *")
	})
	t.Run("cloud map", func(t *testing.T) {
		if _, err := e.cloudMap("AKIDADMIN", "admin-secret").ListNamespaces(ctx, &sd.ListNamespacesInput{}); err != nil {
			t.Fatal(err)
		}
		_, err := e.cloudMap("AKIDADMIN", "wrong-secret").ListNamespaces(ctx, &sd.ListNamespacesInput{})
		wantAPIError(t, err, "InvalidSignatureException", "does not match")
		_, err = e.cloudMap("AKIDNOBODY", "x").ListNamespaces(ctx, &sd.ListNamespacesInput{})
		wantAPIError(t, err, "UnrecognizedClientException", "invalid")
		_, err = e.cloudMap("AKIDMESHA", "mesh-a-secret").GetService(ctx, &sd.GetServiceInput{Id: aws.String("srv-1")})
		wantAPIError(t, err, "AccessDeniedException", "servicediscovery:GetService on resource: arn:aws:servicediscovery:us-east-1:111122223333:service/srv-1")
	})
	t.Run("clock skew", func(t *testing.T) {
		for _, c := range []struct {
			shift time.Duration
			msg   string
		}{{-6 * time.Minute, "Signature expired: "}, {6 * time.Minute, "Signature not yet current: "}} {
			resp := e.signedDo(t, "GET", "/v20190125/meshes", "", "AKIDADMIN", "admin-secret", "appmesh", time.Now().Add(c.shift))
			if resp.status != 403 || resp.errType != "InvalidSignatureException" || !strings.HasPrefix(resp.message, c.msg) {
				t.Errorf("shift %s: %d %s %q", c.shift, resp.status, resp.errType, resp.message)
			}
		}
	})
	t.Run("weft endpoints", func(t *testing.T) {
		resp := e.signedDo(t, "POST", "/v1/tokens", `{"resource":"mesh/a/virtualNode/n","ttl":"1h"}`, "AKIDMESHA", "mesh-a-secret", "weft", time.Now())
		if resp.status != 200 {
			t.Fatalf("token for its own mesh: %d %s", resp.status, resp.message)
		}
		resp = e.signedDo(t, "POST", "/v1/tokens", `{"resource":"mesh/b/virtualNode/n"}`, "AKIDMESHA", "mesh-a-secret", "weft", time.Now())
		if resp.status != 403 || !strings.Contains(resp.message, "weft:CreateToken on resource: arn:aws:appmesh:us-east-1:444455556666:mesh/b/virtualNode/n") {
			t.Fatalf("token for another mesh: %d %s", resp.status, resp.message)
		}
		resp = e.signedDo(t, "GET", "/v1/proxies", "", "AKIDMESHA", "mesh-a-secret", "weft", time.Now())
		if resp.status != 403 || !strings.Contains(resp.message, "weft:GetProxies") {
			t.Fatalf("/v1/proxies: %d %s", resp.status, resp.message)
		}
		r, err := http.Get(e.url + "/v1/proxies")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 403 {
			t.Fatalf("unsigned /v1/proxies: %d", r.StatusCode)
		}
		// An open path does not open Cloud Map: the target decides.
		req, _ := http.NewRequest("POST", e.url+"/healthz", strings.NewReader(`{}`))
		req.Header.Set("X-Amz-Target", "Route53AutoNaming_v20170314.ListNamespaces")
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		r, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 403 || r.Header.Get("x-amzn-ErrorType") != "MissingAuthenticationTokenException" {
			t.Fatalf("unsigned Cloud Map call at /healthz: %d %s", r.StatusCode, r.Header.Get("x-amzn-ErrorType"))
		}
		r, err = http.Get(e.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("/healthz: %d", r.StatusCode)
		}
	})
	t.Run("body bound", func(t *testing.T) {
		big := `{"meshName":"` + strings.Repeat("x", 2<<20) + `"}`
		resp := e.signedDo(t, "PUT", "/v20190125/meshes/big", big, "AKIDADMIN", "admin-secret", "appmesh", time.Now())
		if resp.status != 413 {
			t.Fatalf("2 MiB body: %d %s", resp.status, resp.errType)
		}
	})
}

// TestAPIWithoutAuthFile: without a credentials file nothing is checked
// and a 12-digit key id still names the account, as before.
func TestAPIWithoutAuthFile(t *testing.T) {
	e := newAuthEnv(t, "")
	out, err := e.mesh("444455556666", "anything").CreateMesh(t.Context(), &sdk.CreateMeshInput{MeshName: aws.String("m")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.Mesh.Metadata.MeshOwner); got != "444455556666" {
		t.Fatalf("meshOwner %s", got)
	}
}

type rawResponse struct {
	status           int
	errType, message string
	body             []byte
}

// signedDo sends a request signed by aws-sdk-go-v2's signer at signTime.
func (e *authEnv) signedDo(t testing.TB, method, path, body, id, secret, service string, signTime time.Time) rawResponse {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req, hex.EncodeToString(sum[:]), service, "us-east-1", signTime); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m struct {
		Message string `json:"message"`
	}
	json.Unmarshal(b, &m)
	return rawResponse{status: resp.StatusCode, errType: resp.Header.Get("x-amzn-ErrorType"), message: m.Message, body: b}
}

// TestAWSCLI: the AWS CLI with right, wrong and missing keys and a key
// allowed another mesh; Cloud Map's JSON errors too.
func TestAWSCLI(t *testing.T) {
	if _, err := exec.LookPath("aws"); err != nil {
		if os.Getenv("WEFT_CI") == "1" {
			t.Fatal("the AWS CLI (aws) is not on PATH")
		}
		t.Skip("the AWS CLI (aws) is not on PATH")
	}
	e := newAuthEnv(t, authFile)
	aws := func(t *testing.T, id, secret string, args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "aws", append(args, "--endpoint-url", e.url, "--region", "us-east-1")...)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+id, "AWS_SECRET_ACCESS_KEY="+secret, "AWS_MAX_ATTEMPTS=1",
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true")
		if id == "" {
			cmd.Args = append(cmd.Args, "--no-sign-request")
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("aws: %v", err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	}
	for _, c := range []struct {
		name, id, secret string
		args             []string
		wantRC           int
		want             string
	}{
		{"right key", "AKIDADMIN", "admin-secret", []string{"appmesh", "create-mesh", "--mesh-name", "cli"}, 0, `"meshName": "cli"`},
		{"wrong secret", "AKIDADMIN", "nope-nope", []string{"appmesh", "list-meshes"}, 255, "InvalidSignatureException"},
		{"missing", "", "", []string{"appmesh", "list-meshes"}, 255, "MissingAuthenticationTokenException"},
		{"other mesh", "AKIDMESHA", "mesh-a-secret", []string{"appmesh", "create-mesh", "--mesh-name", "b"}, 255, "is not authorized to perform: appmesh:CreateMesh on resource: arn:aws:appmesh:us-east-1:444455556666:mesh/b"},
		{"cloud map wrong", "AKIDADMIN", "nope-nope", []string{"servicediscovery", "list-namespaces"}, 255, "InvalidSignatureException"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each CLI start costs seconds
			rc, out := aws(t, c.id, c.secret, c.args...)
			if rc != c.wantRC || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want %d; output:\n%s\nwant it to contain %q", rc, c.wantRC, out, c.want)
			}
		})
	}
}

func TestCheckExposure(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, c := range []struct {
		cfg     Config
		wantErr string
	}{
		{Config{APIAddr: "127.0.0.1:9080", XDSAddr: "127.0.0.1:15010"}, ""},
		{Config{APIAddr: "localhost:9080", XDSAddr: "[::1]:15010"}, ""},
		{Config{APIAddr: "0.0.0.0:9080", XDSAddr: "127.0.0.1:15010"}, "--api-addr 0.0.0.0:9080 is reachable from other machines"},
		{Config{APIAddr: "127.0.0.1:9080", XDSAddr: ":15010"}, "--xds-addr :15010"},
		{Config{APIAddr: "10.0.0.5:9080", XDSAddr: ""}, "--auth-file"},
		{Config{APIAddr: "0.0.0.0:9080", AuthFile: "keys.yaml"}, ""},
		{Config{APIAddr: "0.0.0.0:9080", Insecure: true}, ""},
	} {
		err := checkExposure(c.cfg, log)
		if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.wantErr)
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "--insecure") {
		t.Errorf("--insecure logged no warning: %s", logs.String())
	}
	// Run refuses before it opens anything.
	err := Run(t.Context(), Config{APIAddr: "0.0.0.0:0", DataDir: filepath.Join(t.TempDir(), "d")}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("Run on 0.0.0.0 without credentials: %v", err)
	}
}

// TestSTSWithCredentials: GetCallerIdentity answers the key's account
// (not the digits of its id), needs no statement (IAM allows it to every
// caller), and a bad signature is refused in STS's own error shape.
func TestSTSWithCredentials(t *testing.T) {
	e := newAuthEnv(t, authFile)
	client := func(id, secret string) *sts.Client {
		return sts.New(sts.Options{
			Region: "us-east-1", BaseEndpoint: aws.String(e.url), RetryMaxAttempts: 1,
			Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
			}),
		})
	}
	for _, c := range []struct{ id, secret, account string }{
		{"AKIDMESHA", "mesh-a-secret", "444455556666"},
		{"123456789012", "digits-secret", "777788889999"},
	} {
		out, err := client(c.id, c.secret).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		if aws.ToString(out.Account) != c.account || aws.ToString(out.Arn) != "arn:aws:iam::"+c.account+":root" {
			t.Errorf("%s: GetCallerIdentity = %s %s, want account %s", c.id, aws.ToString(out.Account), aws.ToString(out.Arn), c.account)
		}
	}
	_, err := client("AKIDMESHA", "wrong").GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	wantAPIError(t, err, "InvalidSignatureException", "signature")
}

// TestTrafficOtherAccount: GET /v1/traffic is authorized on "*", so a key
// may read its own account's meshes only: meshOwner naming another
// account is refused (403, AWS-shaped) whether that mesh exists or not.
func TestTrafficOtherAccount(t *testing.T) {
	e := newAuthEnv(t, authFile)
	log := slog.New(slog.DiscardHandler)
	ts := httptest.NewServer(newHandler(e.st, e.cfg, log, prometheus.NewRegistry(), nil, e.sec, nil, lrs.New(lrs.Options{})))
	t.Cleanup(ts.Close)
	e.url = ts.URL
	if _, err := e.mesh("AKIDADMIN", "admin-secret").CreateMesh(t.Context(), &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	if r := e.signedDo(t, "GET", "/v1/traffic?mesh=m", "", "AKIDADMIN", "admin-secret", "weft", time.Now()); r.status != 200 {
		t.Fatalf("own mesh: %d %s", r.status, r.body)
	}
	for _, owner := range []string{"444455556666", "999999999999"} {
		r := e.signedDo(t, "GET", "/v1/traffic?mesh=m&meshOwner="+owner, "", "AKIDADMIN", "admin-secret", "weft", time.Now())
		if r.status != 403 || r.errType != "AccessDeniedException" {
			t.Errorf("meshOwner %s: %d %s %s, want 403 AccessDeniedException", owner, r.status, r.errType, r.body)
		}
	}
}
