package remote

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/cloudmap"
)

// BenchmarkRound measures one polling round over 200 followed services
// whose revisions did not move (the steady state: one
// DiscoverInstancesRevision each), against weft's Cloud Map API on
// loopback, client and remote in one process. cpu-µs/service counts
// both.
func BenchmarkRound(b *testing.B) {
	const services = 200
	dir := b.TempDir()
	st := openStore(b, "local.db")
	remote := openStore(b, "remote.db")
	reg := cloudmap.NewRegistry(remote, cloudmap.Config{})
	srv := httptest.NewServer(&api.Handler{CloudMap: cloudmapapi.New(reg, slog.New(slog.DiscardHandler))})
	b.Cleanup(srv.Close)
	b.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	b.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	b.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	b.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	ctx := context.Background()
	cm := sd.New(sd.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "secret"}, nil
	})})
	if _, err := cm.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: aws.String("apps")}); err != nil {
		b.Fatal(err)
	}
	nss, err := cm.ListNamespaces(ctx, &sd.ListNamespacesInput{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range services {
		name := fmt.Sprintf("s%d", i)
		svc, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String(name), NamespaceId: nss.Namespaces[0].Id})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cm.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String("i"),
			Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1"}}); err != nil {
			b.Fatal(err)
		}
		putNode(b, st, "n"+name, "apps", name)
	}
	r, err := ParseRemote("name=r,region=us-east-1,namespace=apps,endpoint=" + srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	f, err := New(ctx, Config{Remotes: []Remote{r}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Round(ctx, st); err != nil { // fetches every service once
		b.Fatal(err)
	}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	for range b.N {
		if err := f.Round(ctx, st); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := func(u syscall.Rusage) float64 {
		return float64(u.Utime.Nano()+u.Stime.Nano()) / 1e3
	}
	if s := f.Status(); s.Remotes[0].Services[StateOK] != services {
		b.Fatalf("status %+v", s.Remotes)
	}
	b.ReportMetric((cpu(after)-cpu(before))/float64(b.N*services), "cpu-µs/service")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*services), "wall-µs/service")
}
