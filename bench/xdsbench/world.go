package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/appmesh"
	mesh "github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
)

// apiClients talk to weft's API as any AWS SDK program would.
type apiClients struct {
	mesh *appmesh.Client
	cm   *servicediscovery.Client
}

func newAPI(endpoint string) apiClients {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("weft", "weft", "")}
	return apiClients{
		mesh: appmesh.NewFromConfig(cfg, func(o *appmesh.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		cm:   servicediscovery.NewFromConfig(cfg, func(o *servicediscovery.Options) { o.BaseEndpoint = aws.String(endpoint) }),
	}
}

func waitAPI(ctx context.Context, api apiClients) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := api.mesh.ListMeshes(ctx, &appmesh.ListMeshesInput{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server API not up: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // startup of the child; not part of any measurement
	}
}

// world is the mesh the writes change.
type world struct {
	api        apiClients
	serviceIDs []string // Cloud Map service of each target pair
	extra      []bool   // whether target pair k has its extra instance
	weights    []int    // the weight of router k's first target (setWeights)
}

const meshName = "bench"

func setup(ctx context.Context, api apiClients, nodes, services int, unique, every bool) (*world, error) {
	w := &world{api: api, extra: make([]bool, services), weights: slices.Repeat([]int{50}, services)}
	ns, err := api.cm.CreateHttpNamespace(ctx, &servicediscovery.CreateHttpNamespaceInput{Name: aws.String("bench.local")})
	if err != nil {
		return nil, err
	}
	var nsID string
	for nsID == "" {
		op, err := api.cm.GetOperation(ctx, &servicediscovery.GetOperationInput{OperationId: ns.OperationId})
		if err != nil {
			return nil, err
		}
		switch op.Operation.Status {
		case sd.OperationStatusSuccess:
			nsID = op.Operation.Targets[string(sd.OperationTargetTypeNamespace)]
		case sd.OperationStatusFail:
			return nil, errors.New(aws.ToString(op.Operation.ErrorMessage))
		default:
			time.Sleep(10 * time.Millisecond) // setup only
		}
	}
	if _, err := api.mesh.CreateMesh(ctx, &appmesh.CreateMeshInput{MeshName: aws.String(meshName),
		Spec: &mesh.MeshSpec{EgressFilter: &mesh.EgressFilter{Type: mesh.EgressFilterTypeDropAll}}}); err != nil {
		return nil, err
	}
	listener := []mesh.Listener{{PortMapping: &mesh.PortMapping{Port: aws.Int32(8080), Protocol: mesh.PortProtocolHttp}}}
	for k := range services {
		svc, err := api.cm.CreateService(ctx, &servicediscovery.CreateServiceInput{Name: aws.String(fmt.Sprintf("tgt-%d", k)), NamespaceId: aws.String(nsID)})
		if err != nil {
			return nil, err
		}
		w.serviceIDs = append(w.serviceIDs, aws.ToString(svc.Service.Id))
		for _, v := range []string{"a", "b"} {
			if _, err := api.mesh.CreateVirtualNode(ctx, &appmesh.CreateVirtualNodeInput{MeshName: aws.String(meshName),
				VirtualNodeName: aws.String(fmt.Sprintf("tgt-%d-%s", k, v)),
				Spec: &mesh.VirtualNodeSpec{Listeners: listener, ServiceDiscovery: &mesh.ServiceDiscoveryMemberAwsCloudMap{Value: mesh.AwsCloudMapServiceDiscovery{
					NamespaceName: aws.String("bench.local"), ServiceName: aws.String(fmt.Sprintf("tgt-%d", k)),
					Attributes: []mesh.AwsCloudMapInstanceAttribute{{Key: aws.String("version"), Value: aws.String(v)}},
				}}}}); err != nil {
				return nil, err
			}
			if err := w.register(ctx, k, v, v+"-1"); err != nil {
				return nil, err
			}
		}
		if _, err := api.mesh.CreateVirtualRouter(ctx, &appmesh.CreateVirtualRouterInput{MeshName: aws.String(meshName),
			VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k)),
			Spec:              &mesh.VirtualRouterSpec{Listeners: []mesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}}); err != nil {
			return nil, err
		}
		if _, err := api.mesh.CreateRoute(ctx, &appmesh.CreateRouteInput{MeshName: aws.String(meshName),
			VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k)), RouteName: aws.String("split"), Spec: routeSpec(k, 50, 50)}); err != nil {
			return nil, err
		}
		if _, err := api.mesh.CreateVirtualService(ctx, &appmesh.CreateVirtualServiceInput{MeshName: aws.String(meshName),
			VirtualServiceName: aws.String(fmt.Sprintf("svc-%d.bench.local", k)),
			Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProviderMemberVirtualRouter{Value: mesh.VirtualRouterServiceProvider{
				VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k))}}}}); err != nil {
			return nil, err
		}
	}
	// Client nodes, created concurrently: the API serialises nothing but
	// the store's group commit.
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	sem := make(chan struct{}, 32)
	for j := range nodes {
		sem <- struct{}{}
		wg.Go(func() { // ends when the call returns
			defer func() { <-sem }()
			a, b := j%services, (j+1)%services
			if every {
				a, b = 0, 1+j%(services-1) // service 0 for all
			}
			backends := []mesh.Backend{
				&mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(fmt.Sprintf("svc-%d.bench.local", a))}},
				&mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(fmt.Sprintf("svc-%d.bench.local", b))}},
			}
			if unique {
				backends = append(backends, &mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(fmt.Sprintf("own-%d.bench.local", j))}})
			}
			_, err := api.mesh.CreateVirtualNode(ctx, &appmesh.CreateVirtualNodeInput{MeshName: aws.String(meshName),
				VirtualNodeName: aws.String(fmt.Sprintf("client-%d", j)),
				Spec: &mesh.VirtualNodeSpec{Listeners: listener,
					ServiceDiscovery: &mesh.ServiceDiscoveryMemberDns{Value: mesh.DnsServiceDiscovery{Hostname: aws.String(fmt.Sprintf("client-%d.bench.local", j))}},
					Backends:         backends}})
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		return nil, *err
	}
	return w, nil
}

func routeSpec(k, a, b int) *mesh.RouteSpec {
	return &mesh.RouteSpec{HttpRoute: &mesh.HttpRoute{
		Match: &mesh.HttpRouteMatch{Prefix: aws.String("/")},
		Action: &mesh.HttpRouteAction{WeightedTargets: []mesh.WeightedTarget{
			{VirtualNode: aws.String(fmt.Sprintf("tgt-%d-a", k)), Weight: int32(a)},
			{VirtualNode: aws.String(fmt.Sprintf("tgt-%d-b", k)), Weight: int32(b)},
		}},
	}}
}

func (w *world) setWeights(ctx context.Context, k, a, b int) error {
	_, err := w.api.mesh.UpdateRoute(ctx, &appmesh.UpdateRouteInput{MeshName: aws.String(meshName),
		VirtualRouterName: aws.String(fmt.Sprintf("router-%d", k)), RouteName: aws.String("split"), Spec: routeSpec(k, a, b)})
	if err == nil {
		w.weights[k] = a
	}
	return err
}

// hostNumber gives every instance of a target pair its own address: two
// instances on one address are one endpoint, and a write would change
// nothing.
func hostNumber(version, id string) int {
	switch version + "/" + id {
	case "a/a-1":
		return 1
	case "b/b-1":
		return 2
	}
	return 3
}

func (w *world) register(ctx context.Context, k int, version, id string) error {
	_, err := w.api.cm.RegisterInstance(ctx, &servicediscovery.RegisterInstanceInput{ServiceId: aws.String(w.serviceIDs[k]), InstanceId: aws.String(id),
		Attributes: map[string]string{"AWS_INSTANCE_IPV4": fmt.Sprintf("10.%d.%d.%d", k/250, k%250, hostNumber(version, id)), "version": version}})
	return err
}

// toggleInstance registers or deregisters a second instance of target
// pair k's "a" node.
func (w *world) toggleInstance(ctx context.Context, k int) error {
	w.extra[k] = !w.extra[k]
	if w.extra[k] {
		return w.register(ctx, k, "a", "a-2")
	}
	_, err := w.api.cm.DeregisterInstance(ctx, &servicediscovery.DeregisterInstanceInput{ServiceId: aws.String(w.serviceIDs[k]), InstanceId: aws.String("a-2")})
	return err
}
