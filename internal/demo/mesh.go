package demo

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/appmesh"
	mesh "github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
)

// The tutorial's names.
const (
	meshName      = "color-mesh"
	namespaceName = "colors.local"
	gatewayName   = "color-gateway"
	routerVS      = "router.colors.local"
)

// clients talk to weft's API as any AWS SDK program would.
type clients struct {
	mesh *appmesh.Client
	cm   *servicediscovery.Client
}

// newClients returns SDK clients for weft's API at endpoint; hc, when not
// nil, is the HTTP client they use.
func newClients(endpoint, region string, hc *http.Client) clients {
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider("weft", "weft", ""),
	}
	if hc != nil {
		cfg.HTTPClient = hc
	}
	return clients{
		mesh: appmesh.NewFromConfig(cfg, func(o *appmesh.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		cm:   servicediscovery.NewFromConfig(cfg, func(o *servicediscovery.Options) { o.BaseEndpoint = aws.String(endpoint) }),
	}
}

// createMesh creates what sections 1 to 4 of the tutorial create, in its
// order, with 03h's red (router.colors.local as backend) and the gateway
// listening on gatewayPort. It returns the Cloud Map service id of each
// virtual node.
func createMesh(ctx context.Context, c clients, gatewayPort int32) (map[string]string, error) {
	ns, err := c.cm.CreatePrivateDnsNamespace(ctx, &servicediscovery.CreatePrivateDnsNamespaceInput{
		Name: aws.String(namespaceName), Vpc: aws.String("vpc-0weftdemo"),
		Description: aws.String("Namespace for the color mesh."),
	})
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	targets, err := waitOperation(ctx, c.cm, aws.ToString(ns.OperationId))
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	nsID := targets[string(sd.OperationTargetTypeNamespace)]
	serviceIDs := map[string]string{}
	// Each Cloud Map service and the virtual node whose tasks register in
	// it: green's tasks register as "router", so that the router's virtual
	// service name resolves.
	for _, s := range []struct{ name, node string }{{"red", "red"}, {"blue", "blue"}, {"router", "green"}, {"yellow", "yellow"}} {
		out, err := c.cm.CreateService(ctx, &servicediscovery.CreateServiceInput{
			Name: aws.String(s.name), NamespaceId: aws.String(nsID),
			DnsConfig: &sd.DnsConfig{
				RoutingPolicy: sd.RoutingPolicyMultivalue,
				DnsRecords:    []sd.DnsRecord{{Type: sd.RecordTypeA, TTL: aws.Int64(300)}},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("create Cloud Map service %s: %w", s.name, err)
		}
		serviceIDs[s.node] = aws.ToString(out.Service.Id)
	}

	if _, err := c.mesh.CreateMesh(ctx, &appmesh.CreateMeshInput{
		MeshName: aws.String(meshName),
		Spec:     &mesh.MeshSpec{EgressFilter: &mesh.EgressFilter{Type: mesh.EgressFilterTypeDropAll}},
	}); err != nil {
		return nil, fmt.Errorf("create mesh: %w", err)
	}
	nodes := []struct {
		name, cloudMap, backend string
	}{
		{"red", "red", routerVS},
		{"blue", "blue", "red.colors.local"},
		{"green", "router", ""},
		{"yellow", "yellow", ""},
	}
	for _, n := range nodes {
		spec := &mesh.VirtualNodeSpec{
			Listeners: []mesh.Listener{{PortMapping: &mesh.PortMapping{Port: aws.Int32(80), Protocol: mesh.PortProtocolHttp}}},
			ServiceDiscovery: &mesh.ServiceDiscoveryMemberAwsCloudMap{Value: mesh.AwsCloudMapServiceDiscovery{
				NamespaceName: aws.String(namespaceName), ServiceName: aws.String(n.cloudMap),
			}},
		}
		if n.backend != "" {
			spec.Backends = []mesh.Backend{&mesh.BackendMemberVirtualService{Value: mesh.VirtualServiceBackend{VirtualServiceName: aws.String(n.backend)}}}
		}
		if _, err := c.mesh.CreateVirtualNode(ctx, &appmesh.CreateVirtualNodeInput{
			MeshName: aws.String(meshName), VirtualNodeName: aws.String(n.name), Spec: spec,
		}); err != nil {
			return nil, fmt.Errorf("create virtual node %s: %w", n.name, err)
		}
	}
	for _, n := range []string{"red", "blue"} {
		if _, err := c.mesh.CreateVirtualService(ctx, &appmesh.CreateVirtualServiceInput{
			MeshName: aws.String(meshName), VirtualServiceName: aws.String(n + ".colors.local"),
			Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProviderMemberVirtualNode{
				Value: mesh.VirtualNodeServiceProvider{VirtualNodeName: aws.String(n)},
			}},
		}); err != nil {
			return nil, fmt.Errorf("create virtual service %s.colors.local: %w", n, err)
		}
	}

	if _, err := c.mesh.CreateVirtualRouter(ctx, &appmesh.CreateVirtualRouterInput{
		MeshName: aws.String(meshName), VirtualRouterName: aws.String("color-router"),
		Spec: &mesh.VirtualRouterSpec{Listeners: []mesh.VirtualRouterListener{
			{PortMapping: &mesh.PortMapping{Port: aws.Int32(80), Protocol: mesh.PortProtocolHttp}},
		}},
	}); err != nil {
		return nil, fmt.Errorf("create virtual router: %w", err)
	}
	if _, err := c.mesh.CreateRoute(ctx, &appmesh.CreateRouteInput{
		MeshName: aws.String(meshName), VirtualRouterName: aws.String("color-router"), RouteName: aws.String("color-route"),
		Spec: &mesh.RouteSpec{Priority: aws.Int32(1), HttpRoute: &mesh.HttpRoute{
			Match: &mesh.HttpRouteMatch{Method: mesh.HttpMethodGet, Port: aws.Int32(80), Prefix: aws.String("/")},
			Action: &mesh.HttpRouteAction{WeightedTargets: []mesh.WeightedTarget{
				{VirtualNode: aws.String("green"), Weight: 4, Port: aws.Int32(80)},
				{VirtualNode: aws.String("yellow"), Weight: 1, Port: aws.Int32(80)},
			}},
		}},
	}); err != nil {
		return nil, fmt.Errorf("create route: %w", err)
	}
	if _, err := c.mesh.CreateVirtualService(ctx, &appmesh.CreateVirtualServiceInput{
		MeshName: aws.String(meshName), VirtualServiceName: aws.String(routerVS),
		Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProviderMemberVirtualRouter{
			Value: mesh.VirtualRouterServiceProvider{VirtualRouterName: aws.String("color-router")},
		}},
	}); err != nil {
		return nil, fmt.Errorf("create virtual service %s: %w", routerVS, err)
	}

	if _, err := c.mesh.CreateVirtualGateway(ctx, &appmesh.CreateVirtualGatewayInput{
		MeshName: aws.String(meshName), VirtualGatewayName: aws.String(gatewayName),
		Spec: &mesh.VirtualGatewaySpec{Listeners: []mesh.VirtualGatewayListener{
			{PortMapping: &mesh.VirtualGatewayPortMapping{Port: aws.Int32(gatewayPort), Protocol: mesh.VirtualGatewayPortProtocolHttp}},
		}},
	}); err != nil {
		return nil, fmt.Errorf("create virtual gateway: %w", err)
	}
	routes := []struct{ name, prefix, target string }{
		{"color-gateway-route-1", "/router", routerVS},
		{"color-gateway-route-2", "/", "blue.colors.local"},
	}
	for _, r := range routes {
		if _, err := c.mesh.CreateGatewayRoute(ctx, &appmesh.CreateGatewayRouteInput{
			MeshName: aws.String(meshName), VirtualGatewayName: aws.String(gatewayName), GatewayRouteName: aws.String(r.name),
			Spec: &mesh.GatewayRouteSpec{HttpRoute: &mesh.HttpGatewayRoute{
				Match:  &mesh.HttpGatewayRouteMatch{Prefix: aws.String(r.prefix)},
				Action: &mesh.HttpGatewayRouteAction{Target: &mesh.GatewayRouteTarget{VirtualService: &mesh.GatewayRouteVirtualService{VirtualServiceName: aws.String(r.target)}}},
			}},
		}); err != nil {
			return nil, fmt.Errorf("create gateway route %s: %w", r.name, err)
		}
	}
	return serviceIDs, nil
}

// register registers a task's address in a Cloud Map service as ECS does
// for a service with serviceRegistries; port 0 registers none, as for an A
// record service in awsvpc mode.
func register(ctx context.Context, c clients, serviceID, instanceID, ip string, port int) error {
	attrs := map[string]string{"AWS_INSTANCE_IPV4": ip, "AWS_INIT_HEALTH_STATUS": "HEALTHY"}
	if port != 0 {
		attrs["AWS_INSTANCE_PORT"] = fmt.Sprint(port)
	}
	out, err := c.cm.RegisterInstance(ctx, &servicediscovery.RegisterInstanceInput{
		ServiceId: aws.String(serviceID), InstanceId: aws.String(instanceID), Attributes: attrs,
	})
	if err != nil {
		return fmt.Errorf("register instance %s: %w", instanceID, err)
	}
	if _, err := waitOperation(ctx, c.cm, aws.ToString(out.OperationId)); err != nil {
		return fmt.Errorf("register instance %s: %w", instanceID, err)
	}
	return nil
}

// waitOperation polls a Cloud Map operation until it ends.
func waitOperation(ctx context.Context, cm *servicediscovery.Client, id string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		out, err := cm.GetOperation(ctx, &servicediscovery.GetOperationInput{OperationId: aws.String(id)})
		if err != nil {
			return nil, fmt.Errorf("operation %s: %w", id, err)
		}
		switch out.Operation.Status {
		case sd.OperationStatusSuccess:
			return out.Operation.Targets, nil
		case sd.OperationStatusFail:
			return nil, fmt.Errorf("operation %s failed: %s", id, aws.ToString(out.Operation.ErrorMessage))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("operation %s: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
