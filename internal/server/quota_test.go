package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// TestCloudMapLimits: Config.CloudMapLimits reach the Cloud Map API.
func TestCloudMapLimits(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := Config{Region: "us-east-1", AccountID: "111122223333", CloudMapLimits: cloudmap.Limits{Namespaces: 1}}
	log := slog.New(slog.DiscardHandler)
	sec, err := newSecurity(t.Context(), st, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.stop)
	ts := httptest.NewServer(newHandler(st, cfg, log, prometheus.NewRegistry(), nil, sec, nil, nil))
	t.Cleanup(ts.Close)
	cm := sd.New(sd.Options{Region: "us-east-1", BaseEndpoint: aws.String(ts.URL), RetryMaxAttempts: 1,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, nil
		})})
	if _, err := cm.CreateHttpNamespace(t.Context(), &sd.CreateHttpNamespaceInput{Name: aws.String("a")}); err != nil {
		t.Fatal(err)
	}
	_, err = cm.CreateHttpNamespace(t.Context(), &sd.CreateHttpNamespaceInput{Name: aws.String("b")})
	if rle := (*sdtypes.ResourceLimitExceeded)(nil); !errors.As(err, &rle) {
		t.Errorf("a second namespace with a quota of 1: %v, want ResourceLimitExceeded", err)
	}
}
