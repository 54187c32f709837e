package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/auth"
)

// lrsSigV4 signs as Envoy's aws_iam call credentials do, for the LRS
// method.
type lrsSigV4 struct{ id, secret string }

func (s lrsSigV4) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	req, err := http.NewRequest("POST", uri[0]+"/StreamLoadStats", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Amz-Content-Sha256", auth.EmptySHA256)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: s.id, SecretAccessKey: s.secret}, req, auth.EmptySHA256, "appmesh", "us-west-2", time.Now()); err != nil {
		return nil, err
	}
	return map[string]string{"authorization": req.Header.Get("Authorization"), "x-amz-date": req.Header.Get("X-Amz-Date"), "x-amz-content-sha256": auth.EmptySHA256}, nil
}
func (lrsSigV4) RequireTransportSecurity() bool { return true }

// TestLRSAuth: the load reporting service on the xDS listener authorizes
// streams as ADS does, so a proxy reports for the node it proves only.
func TestLRSAuth(t *testing.T) {
	e := newXDSEnv(t, authFile, true, nil)
	now := time.Now()
	nodeA := "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/a"
	tokA, err := e.sec.tokens.Mint(nodeA, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T, node string, creds credentials.PerRPCCredentials) (*lrsv3.LoadStatsResponse, error) {
		t.Helper()
		opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: e.serverPool, ServerName: "localhost"}))}
		if creds != nil {
			opts = append(opts, grpc.WithPerRPCCredentials(creds))
		}
		conn, err := grpc.NewClient(e.addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		st, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(&lrsv3.LoadStatsRequest{Node: &core.Node{Id: node}}); err != nil {
			return nil, err
		}
		return st.Recv()
	}
	for _, tc := range []struct {
		name  string
		node  string
		creds credentials.PerRPCCredentials
		code  codes.Code
		msg   string
	}{
		{"no credentials", "mesh/m/virtualNode/a", nil, codes.Unauthenticated, "Missing Authentication Token"},
		{"join token", "mesh/m/virtualNode/a", bearer(tokA), codes.OK, ""},
		{"another node's report", "mesh/m/virtualNode/b", bearer(tokA), codes.PermissionDenied, "the join token is for " + nodeA},
		{"sigv4 as Envoy", nodeA, lrsSigV4{"AKIDADMIN", "admin-secret"}, codes.OK, ""},
		{"sigv4 not allowed on the node", nodeA, lrsSigV4{"AKIDMESHA", "mesh-a-secret"}, codes.PermissionDenied, "appmesh:StreamAggregatedResources on resource: " + nodeA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := open(t, tc.node, tc.creds)
			if tc.code == codes.OK {
				if err != nil || !resp.GetSendAllClusters() {
					t.Fatalf("not served: %v %v", resp, err)
				}
				return
			}
			if resp != nil || status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v %v, want %v containing %q", resp, err, tc.code, tc.msg)
			}
		})
	}
}
