package tutorial

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/api/stsapi"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// TestSTSGetCallerIdentityAWSCLI runs `aws sts get-caller-identity` against
// weft, as tools do before anything else (Terraform's AWS provider): the
// account is the access key id's when it has 12 digits, else the server's.
func TestSTSGetCallerIdentityAWSCLI(t *testing.T) { forEachCLI(t, testSTSGetCallerIdentityAWSCLI) }

func testSTSGetCallerIdentityAWSCLI(t *testing.T, prog cliProgram) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)
	mesh := meshapi.New(ops.New(st, ops.Config{Region: cliRegion}, log), meshapi.Config{DefaultAccount: cliAccount}, log)
	srv := httptest.NewServer(&api.Handler{AppMesh: mesh, STS: stsapi.New(stsapi.Config{Region: cliRegion, Account: mesh.CallerAccount}, log)})
	t.Cleanup(srv.Close)

	cli := startCLI(t, prog)
	for _, c := range []struct{ keyID, account string }{{"444455556666", "444455556666"}, {"weft", cliAccount}} {
		env := cliEnv(c.keyID, cliRegion)
		res := cli.run(t, t.TempDir(), env, "sts", "get-caller-identity", "--endpoint-url", srv.URL)
		var id struct{ UserId, Account, Arn string }
		if res.RC != 0 || json.Unmarshal([]byte(res.Stdout), &id) != nil {
			t.Fatalf("key %s: rc %d: %s %s", c.keyID, res.RC, res.Stdout, res.Stderr)
		}
		if id.Account != c.account || id.UserId != c.account || id.Arn != "arn:aws:iam::"+c.account+":root" {
			t.Errorf("key %s: %+v, want account %s", c.keyID, id, c.account)
		}
	}
	// An operation weft does not serve: STS's error, as the CLI prints it.
	res := cli.run(t, t.TempDir(), cliEnv(cliAccount, cliRegion), "sts", "get-session-token", "--endpoint-url", srv.URL)
	if res.RC == 0 || !strings.Contains(res.Stderr, "(InvalidAction)") || !strings.Contains(res.Stderr, "GetSessionToken") {
		t.Errorf("get-session-token: rc %d, %s", res.RC, res.Stderr)
	}
}
