package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// quotaServer serves the API with cfg on a new store; its clients of
// App Mesh and Cloud Map.
func quotaServer(t *testing.T, cfg Config) (*sdk.Client, *sd.Client) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Region, cfg.AccountID = "us-east-1", "111122223333"
	log := slog.New(slog.DiscardHandler)
	sec, err := newSecurity(t.Context(), st, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.stop)
	ts := httptest.NewServer(newHandler(st, cfg, log, prometheus.NewRegistry(), nil, sec, nil, nil))
	t.Cleanup(ts.Close)
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, nil
	})
	return sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(ts.URL), RetryMaxAttempts: 1, Credentials: creds}),
		sd.New(sd.Options{Region: "us-east-1", BaseEndpoint: aws.String(ts.URL), RetryMaxAttempts: 1, Credentials: creds})
}

// TestZeroLimitsAreNoLimits: every quota set to 0, as --appmesh-limits
// and --cloudmap-limits read "0", is no limit, not the defaults: past
// App Mesh's default of 15 meshes and Cloud Map's of 50 namespaces. With
// no quotas given (nil), the defaults hold.
func TestZeroLimitsAreNoLimits(t *testing.T) {
	off := func(t *testing.T) Config {
		mesh, err := appmesh.ParseLimits(appmesh.Limits{}.String(), appmesh.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		cm, err := cloudmap.ParseLimits(cloudmap.Limits{}.String(), cloudmap.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		return Config{Limits: &mesh, CloudMapLimits: &cm}
	}
	tests := []struct {
		name      string
		cfg       func(t *testing.T) Config
		unlimited bool
	}{
		{"all 0", off, true},
		{"not given", func(*testing.T) Config { return Config{} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mesh, cm := quotaServer(t, tt.cfg(t))
			meshes, namespaces := appmesh.DefaultLimits().Meshes+1, cloudmap.DefaultLimits().Namespaces+1
			var meshErr, nsErr error
			for i := range meshes {
				if _, meshErr = mesh.CreateMesh(t.Context(), &sdk.CreateMeshInput{MeshName: aws.String(fmt.Sprintf("m%d", i))}); meshErr != nil {
					break
				}
			}
			for i := range namespaces {
				if _, nsErr = cm.CreateHttpNamespace(t.Context(), &sd.CreateHttpNamespaceInput{Name: aws.String(fmt.Sprintf("n%d", i))}); nsErr != nil {
					break
				}
			}
			if tt.unlimited && (meshErr != nil || nsErr != nil) {
				t.Errorf("%d meshes and %d namespaces with every quota 0: %v; %v", meshes, namespaces, meshErr, nsErr)
			}
			if !tt.unlimited {
				if le := (*types.LimitExceededException)(nil); !errors.As(meshErr, &le) {
					t.Errorf("%d meshes with the defaults: %v, want LimitExceededException", meshes, meshErr)
				}
				if rle := (*sdtypes.ResourceLimitExceeded)(nil); !errors.As(nsErr, &rle) {
					t.Errorf("%d namespaces with the defaults: %v, want ResourceLimitExceeded", namespaces, nsErr)
				}
			}
		})
	}
}

// TestCloudMapLimits: Config.CloudMapLimits reach the Cloud Map API.
func TestCloudMapLimits(t *testing.T) {
	_, cm := quotaServer(t, Config{CloudMapLimits: &cloudmap.Limits{Namespaces: 1}})
	if _, err := cm.CreateHttpNamespace(t.Context(), &sd.CreateHttpNamespaceInput{Name: aws.String("a")}); err != nil {
		t.Fatal(err)
	}
	_, err := cm.CreateHttpNamespace(t.Context(), &sd.CreateHttpNamespaceInput{Name: aws.String("b")})
	if rle := (*sdtypes.ResourceLimitExceeded)(nil); !errors.As(err, &rle) {
		t.Errorf("a second namespace with a quota of 1: %v, want ResourceLimitExceeded", err)
	}
}
