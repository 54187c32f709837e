package ha

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/smithy-go"

	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// TestEtcdLostWhileRunning: with etcd's only member paused, the API
// answers 503 ServiceUnavailableException while the replica keeps serving
// its proxies their configuration; when etcd is back, writes reach them.
func TestEtcdLostWhileRunning(t *testing.T) {
	c := etcdtest.Start(t, 1)
	rs := startReplicas(t, c, 1)
	api := client(rs[0])
	setUpMesh(t, api, "front")
	p := startProxy(t, "front", []string{rs[0].XDS})
	p.waitWeights(t, 30*time.Second, "1", "1")

	c.Members[0].Pause()
	_, err := api.UpdateRoute(t.Context(), &sdk.UpdateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"),
		RouteName: aws.String("split"), Spec: routeSpec(5, 5)})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ServiceUnavailableException" {
		t.Fatalf("write with etcd paused: %v, want ServiceUnavailableException", err)
	}
	// Reads fail the same way; the proxy is still connected and keeps its
	// configuration.
	if _, err := api.DescribeMesh(t.Context(), &sdk.DescribeMeshInput{MeshName: aws.String(mesh)}); !errors.As(err, &ae) || ae.ErrorCode() != "ServiceUnavailableException" {
		t.Fatalf("read with etcd paused: %v", err)
	}
	if !p.c.Connected() {
		t.Fatal("the proxy lost its stream while etcd was paused")
	}
	p.mu.Lock()
	got := p.weights
	p.mu.Unlock()
	if len(got) != 2 || got[0] != "1" || got[1] != "1" {
		t.Fatalf("proxy weights %v while etcd was paused, want its last configuration [1 1]", got)
	}
	select {
	case <-rs[0].Done():
		t.Fatalf("replica exited while etcd was paused: %v", rs[0].Err())
	default:
	}

	c.Members[0].Resume()
	waitFor(t, 60*time.Second, "writes resuming after etcd came back", func() error {
		_, err := api.UpdateRoute(t.Context(), &sdk.UpdateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"),
			RouteName: aws.String("split"), Spec: routeSpec(4, 6)})
		return err
	})
	p.waitWeights(t, 30*time.Second, "4", "6")
}
