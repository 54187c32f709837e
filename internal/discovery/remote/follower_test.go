package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

func openStore(t testing.TB, name string) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), name), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// putNode writes a virtual node with awsCloudMap discovery into the store,
// as the App Mesh API stores it.
func putNode(t testing.TB, st store.Store, name, ns, svc string) {
	t.Helper()
	vn := appmesh.VirtualNodeData{MeshName: aws.String("m"), VirtualNodeName: aws.String(name), Spec: &appmesh.VirtualNodeSpec{
		ServiceDiscovery: &appmesh.ServiceDiscovery{AwsCloudMap: &appmesh.AwsCloudMapServiceDiscovery{NamespaceName: aws.String(ns), ServiceName: aws.String(svc)}}}}
	b, err := json.Marshal(vn)
	if err != nil {
		t.Fatal(err)
	}
	key := appmesh.Ref{Owner: "111122223333", Mesh: "m", Kind: appmesh.KindVirtualNode, Name: name}.Key()
	if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, b) }); err != nil {
		t.Fatal(err)
	}
}

func records(t *testing.T, st store.Store) map[discovery.ServiceRef]discovery.RemoteRecord {
	t.Helper()
	out := map[discovery.ServiceRef]discovery.RemoteRecord{}
	if _, err := st.View(t.Context(), func(tx store.Tx) error {
		kvs, err := tx.List(discovery.RemotePrefix, "", 0)
		for _, kv := range kvs {
			r, _ := discovery.ParseRemoteKey(kv.Key)
			var rec discovery.RemoteRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return err
			}
			out[r] = rec
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoundLimitsAndCleanup: a round follows at most MaxServices services
// (the rest are over-limit in the status), drops the record of a service
// no node names any more, and a follower without remotes drops them all.
// The remote is weft's Cloud Map API over a socket, asked by the SDK.
func TestRoundLimitsAndCleanup(t *testing.T) {
	rst := openStore(t, "remote.db")
	reg := cloudmap.NewRegistry(rst, cloudmap.Config{})
	srv := httptest.NewServer(&api.Handler{CloudMap: cloudmapapi.New(reg, slog.New(slog.DiscardHandler))})
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	cm := sd.New(sd.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "secret"}, nil
	})})
	ctx := t.Context()
	if _, err := cm.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: aws.String("apps")}); err != nil {
		t.Fatal(err)
	}
	nss, err := cm.ListNamespaces(ctx, &sd.ListNamespacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		svc, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String(fmt.Sprintf("s%d", i)), NamespaceId: nss.Namespaces[0].Id})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cm.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String("i"),
			Attributes: map[string]string{"AWS_INSTANCE_IPV4": fmt.Sprintf("10.0.0.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}

	st := openStore(t, "local.db")
	for i := range 3 {
		putNode(t, st, fmt.Sprintf("n%d", i), "apps", fmt.Sprintf("s%d", i))
	}
	putNode(t, st, "local", "elsewhere", "x") // not a remote namespace
	r, err := ParseRemote("name=r,region=us-east-1,namespace=apps,endpoint=" + srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(ctx, Config{Remotes: []Remote{r}, MaxServices: 2}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Round(ctx, st); err != nil {
		t.Fatal(err)
	}
	got := records(t, st)
	s0, s1, s2 := discovery.ServiceRef{Namespace: "apps", Service: "s0"}, discovery.ServiceRef{Namespace: "apps", Service: "s1"}, discovery.ServiceRef{Namespace: "apps", Service: "s2"}
	if len(got) != 2 || len(got[s0].Instances) != 1 || got[s1].Instances[0].Attributes["AWS_INSTANCE_IPV4"] != "10.0.0.2" {
		t.Fatalf("records after the first round: %+v", got)
	}
	st1 := f.Status()
	if len(st1.Services) != 3 || st1.Services[2].Service != "s2" || st1.Services[2].State != StateOverLimit || st1.Remotes[0].Services[StateOK] != 2 {
		t.Fatalf("status %+v", st1)
	}

	// n0 goes: s0's record goes, s2 now fits.
	key := appmesh.Ref{Owner: "111122223333", Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "n0"}.Key()
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.Delete(key) }); err != nil {
		t.Fatal(err)
	}
	if err := f.Round(ctx, st); err != nil {
		t.Fatal(err)
	}
	got = records(t, st)
	if _, ok := got[s0]; ok || len(got) != 2 || len(got[s2].Instances) != 1 {
		t.Fatalf("records after n0 went: %+v", got)
	}

	// n1 goes, but while the round plans, a client through another
	// replica creates it again: s1's record was stale when read and is
	// needed when deleted, so it stays.
	key = appmesh.Ref{Owner: "111122223333", Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "n1"}.Key()
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.Delete(key) }); err != nil {
		t.Fatal(err)
	}
	racing := &writeFirst{Store: st, first: func() { putNode(t, st, "n1", "apps", "s1") }}
	if err := f.Round(ctx, racing); err != nil {
		t.Fatal(err)
	}
	if racing.first != nil {
		t.Fatal("the round deleted nothing: the race was not set up")
	}
	if got = records(t, st); len(got[s1].Instances) != 1 {
		t.Fatalf("s1's record after n1 came back during the round: %+v", got)
	}

	// A follower without remotes (the flag removed) drops every record.
	none, err := New(ctx, Config{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := none.Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := records(t, st); len(got) != 0 {
		t.Fatalf("records without remotes: %+v", got)
	}
}

// writeFirst is a store on which another writer commits first, just
// before the first Update through it.
type writeFirst struct {
	store.Store
	first func()
}

func (w *writeFirst) Update(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	if w.first != nil {
		w.first()
		w.first = nil
	}
	return w.Store.Update(ctx, fn)
}
