package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// The tutorial's names.
const (
	meshName      = "color-mesh"
	namespaceName = "colors.local"
	gatewayName   = "color-gateway"
	routerVS      = "router.colors.local"
)

// clients talk to weft's API in the wire formats the AWS SDKs use: App
// Mesh's REST JSON and Cloud Map's JSON 1.1. Not through the SDKs: they
// were the largest part of the weft binary and of its start-up, which
// every weft process pays (the proxies too), for the dozen calls the demo
// makes. weft checks no signatures; requests go unsigned.
type clients struct {
	endpoint string
	hc       *http.Client
}

// obj is a JSON object in a request.
type obj = map[string]any

// newClients returns clients for weft's API at endpoint; hc, when not
// nil, is the HTTP client they use.
func newClients(endpoint string, hc *http.Client) clients {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return clients{endpoint: endpoint, hc: hc}
}

// appMesh calls an App Mesh create operation: PUT of a JSON body to path.
func (c clients) appMesh(ctx context.Context, path string, body obj) error {
	return c.call(ctx, http.MethodPut, path, nil, body, nil)
}

// cloudMap calls a Cloud Map operation and decodes its output into out.
func (c clients) cloudMap(ctx context.Context, op string, in obj, out any) error {
	h := http.Header{"X-Amz-Target": {"Route53AutoNaming_v20170314." + op}, "Content-Type": {"application/x-amz-json-1.1"}}
	return c.call(ctx, http.MethodPost, "/", h, in, out)
}

func (c clients) call(ctx context.Context, method, path string, h http.Header, in obj, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		// {"message": ...} from App Mesh, {"__type", "Message"} from Cloud Map.
		var e struct{ Message string }
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("%s (%d): %s", resp.Header.Get("x-amzn-ErrorType"), resp.StatusCode, e.Message)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// meshPath is an App Mesh resource collection path under the mesh; the
// names are escaped as URI segments.
func meshPath(format string, names ...string) string {
	args := []any{url.PathEscape(meshName)}
	for _, n := range names {
		args = append(args, url.PathEscape(n))
	}
	return fmt.Sprintf(format, args...)
}

// createMesh creates what sections 1 to 4 of the tutorial create, in its
// order, with 03h's red (router.colors.local as backend) and the gateway
// listening on gatewayPort. It returns the Cloud Map service id of each
// virtual node.
func createMesh(ctx context.Context, c clients, gatewayPort int32) (map[string]string, error) {
	var ns struct{ OperationId string }
	if err := c.cloudMap(ctx, "CreatePrivateDnsNamespace", obj{
		"Name": namespaceName, "Vpc": "vpc-0weftdemo", "Description": "Namespace for the color mesh.",
	}, &ns); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	targets, err := waitOperation(ctx, c, ns.OperationId)
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	nsID := targets["NAMESPACE"]
	serviceIDs := map[string]string{}
	// Each Cloud Map service and the virtual node whose tasks register in
	// it: green's tasks register as "router", so that the router's virtual
	// service name resolves.
	for _, s := range []struct{ name, node string }{{"red", "red"}, {"blue", "blue"}, {"router", "green"}, {"yellow", "yellow"}} {
		var out struct{ Service struct{ Id string } }
		if err := c.cloudMap(ctx, "CreateService", obj{
			"Name": s.name, "NamespaceId": nsID,
			"DnsConfig": obj{"RoutingPolicy": "MULTIVALUE", "DnsRecords": []obj{{"Type": "A", "TTL": 300}}},
		}, &out); err != nil {
			return nil, fmt.Errorf("create Cloud Map service %s: %w", s.name, err)
		}
		serviceIDs[s.node] = out.Service.Id
	}

	if err := c.appMesh(ctx, "/v20190125/meshes", obj{
		"meshName": meshName, "spec": obj{"egressFilter": obj{"type": "DROP_ALL"}},
	}); err != nil {
		return nil, fmt.Errorf("create mesh: %w", err)
	}
	httpPort := func(port int32) obj { return obj{"portMapping": obj{"port": port, "protocol": "http"}} }
	nodes := []struct {
		name, cloudMap, backend string
	}{
		{"red", "red", routerVS},
		{"blue", "blue", "red.colors.local"},
		{"green", "router", ""},
		{"yellow", "yellow", ""},
	}
	for _, n := range nodes {
		spec := obj{
			"listeners":        []obj{httpPort(80)},
			"serviceDiscovery": obj{"awsCloudMap": obj{"namespaceName": namespaceName, "serviceName": n.cloudMap}},
		}
		if n.backend != "" {
			spec["backends"] = []obj{{"virtualService": obj{"virtualServiceName": n.backend}}}
		}
		if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualNodes"), obj{"virtualNodeName": n.name, "spec": spec}); err != nil {
			return nil, fmt.Errorf("create virtual node %s: %w", n.name, err)
		}
	}
	for _, n := range []string{"red", "blue"} {
		if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualServices"), obj{
			"virtualServiceName": n + ".colors.local",
			"spec":               obj{"provider": obj{"virtualNode": obj{"virtualNodeName": n}}},
		}); err != nil {
			return nil, fmt.Errorf("create virtual service %s.colors.local: %w", n, err)
		}
	}

	if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualRouters"), obj{
		"virtualRouterName": "color-router", "spec": obj{"listeners": []obj{httpPort(80)}},
	}); err != nil {
		return nil, fmt.Errorf("create virtual router: %w", err)
	}
	if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualRouter/%s/routes", "color-router"), obj{
		"routeName": "color-route",
		"spec":      routeSpec(4, 1),
	}); err != nil {
		return nil, fmt.Errorf("create route: %w", err)
	}
	if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualServices"), obj{
		"virtualServiceName": routerVS,
		"spec":               obj{"provider": obj{"virtualRouter": obj{"virtualRouterName": "color-router"}}},
	}); err != nil {
		return nil, fmt.Errorf("create virtual service %s: %w", routerVS, err)
	}

	if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualGateways"), obj{
		"virtualGatewayName": gatewayName, "spec": obj{"listeners": []obj{httpPort(gatewayPort)}},
	}); err != nil {
		return nil, fmt.Errorf("create virtual gateway: %w", err)
	}
	routes := []struct{ name, prefix, target string }{
		{"color-gateway-route-1", "/router", routerVS},
		{"color-gateway-route-2", "/", "blue.colors.local"},
	}
	for _, r := range routes {
		if err := c.appMesh(ctx, meshPath("/v20190125/meshes/%s/virtualGateway/%s/gatewayRoutes", gatewayName), obj{
			"gatewayRouteName": r.name,
			"spec": obj{"httpRoute": obj{
				"match":  obj{"prefix": r.prefix},
				"action": obj{"target": obj{"virtualService": obj{"virtualServiceName": r.target}}},
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
	var out struct{ OperationId string }
	if err := c.cloudMap(ctx, "RegisterInstance", obj{"ServiceId": serviceID, "InstanceId": instanceID, "Attributes": attrs}, &out); err != nil {
		return fmt.Errorf("register instance %s: %w", instanceID, err)
	}
	if _, err := waitOperation(ctx, c, out.OperationId); err != nil {
		return fmt.Errorf("register instance %s: %w", instanceID, err)
	}
	return nil
}

// waitOperation polls a Cloud Map operation until it ends and returns its
// targets (NAMESPACE, SERVICE, INSTANCE: id).
func waitOperation(ctx context.Context, c clients, id string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var out struct {
			Operation struct {
				Status       string
				ErrorMessage string
				Targets      map[string]string
			}
		}
		if err := c.cloudMap(ctx, "GetOperation", obj{"OperationId": id}, &out); err != nil {
			return nil, fmt.Errorf("operation %s: %w", id, err)
		}
		switch out.Operation.Status {
		case "SUCCESS":
			return out.Operation.Targets, nil
		case "FAIL":
			return nil, fmt.Errorf("operation %s failed: %s", id, out.Operation.ErrorMessage)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("operation %s: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
