// Package translate turns App Mesh resources into the Envoy v3 resources one
// proxy needs, named and defaulted as App Mesh named and defaulted them.
//
// It is a pure function: a View of one mesh plus the identity of one proxy
// in, sorted resources out. No I/O, no clock, no randomness: the same inputs
// give the same bytes. It imports neither the store nor the xDS server.
//
//	View + Identity ─ Translate ─▶ node.go       sidecar: ingress.go + egress.go
//	                              gateway.go    two hops: gatewayroute.go, then egress routes
//	                              proxyless.go  api_listeners for gRPC clients
//	         service.go resolves a virtual service to ports and routes;
//	         route.go, match.go, cluster.go, health.go, endpoint.go, tls.go,
//	         filter.go, listener.go, accesslog.go build the Envoy messages;
//	         names.go holds App Mesh's naming scheme.
//	TranslateWith is Translate with a Memo (memo.go): translations of one
//	batch share the egress of nodes whose egress inputs are equal, and
//	otherwise each egress cluster and each service's virtual host; a
//	Kept (kept.go) carries each sidecar's ingress from batch to batch
//	while its node and mesh are the same.
//	Resources ─ Check (check.go) ─▶ the xDS server pushes them
//	            = CheckResource on each resource (the server: once per
//	              distinct resource) + CheckRefs on what they name
//
// docs/envoy-config.md describes the output for users and for weft proxy.
package translate

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Identity is the proxy a translation is for.
type Identity struct {
	MeshOwner string       // account that owns the mesh
	Mesh      string       // mesh name
	Kind      appmesh.Kind // KindVirtualNode or KindVirtualGateway
	Name      string       // virtual node or virtual gateway name
	// Proxyless is a gRPC client using the xds resolver rather than Envoy or
	// weft proxy: it gets one api_listener per backend virtual service.
	Proxyless bool
	// SDSSocket: the proxy has a local SDS agent (its node metadata says
	// "weft.sds_socket"), which serves App Mesh's sds.secretName secrets
	// on the bootstrap cluster static_cluster_sds_unix_socket; otherwise
	// weft server serves them over ADS.
	SDSSocket bool
	// IngressPort and EgressPort are the ports the proxy's traffic
	// interception sends inbound and outbound traffic to (its node
	// metadata's ListenerPortsMetadata keys); 0 means App Mesh's
	// DefaultIngressPort and DefaultEgressPort.
	IngressPort, EgressPort uint32
}

// Endpoint is one healthy instance of a virtual node discovered through
// Cloud Map, with the addresses it registered (AWS_INSTANCE_IPV4,
// AWS_INSTANCE_IPV6); the translator picks one by the ipPreference of the
// node or mesh. Port 0 means the instance registered no AWS_INSTANCE_PORT
// and the listener port applies; a node with several listeners always uses
// each listener's port, since one instance port cannot stand for them all.
type Endpoint struct {
	IPv4 string
	IPv6 string
	Port uint32
}

// View is everything known about one mesh at one store revision. It is built
// once per change, shared by every proxy of the mesh and never modified.
type View struct {
	Mesh            *appmesh.MeshData
	VirtualNodes    map[string]*appmesh.VirtualNodeData    // by name
	VirtualServices map[string]*appmesh.VirtualServiceData // by name
	VirtualRouters  map[string]*appmesh.VirtualRouterData  // by name
	Routes          map[string][]*appmesh.RouteData        // by router name
	VirtualGateways map[string]*appmesh.VirtualGatewayData // by name
	GatewayRoutes   map[string][]*appmesh.GatewayRouteData // by gateway name
	// Endpoints holds, for each virtual node with awsCloudMap discovery,
	// its healthy instances after the node's attribute filter.
	Endpoints map[string][]Endpoint
}

// Resources is one proxy's configuration, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment

	// Deps lists every resource the translation read, present or not, so
	// the xDS server can tell which proxies a change affects (a backend
	// created later must reach the proxies that named it). A Ref with an
	// empty Name stands for every resource of its Kind under its Parent:
	// {Kind: route, Parent: <router>} is "the routes of <router>",
	// {Kind: gatewayRoute, Parent: <gateway>} "the gateway routes of
	// <gateway>", {Kind: virtualService} "every virtual service of the mesh".
	// EndpointsOf lists the virtual nodes whose Endpoints it read. Both
	// sorted (Ref by Owner, Mesh, Kind, Parent, Name), without duplicates.
	// Deps may be the very slice an earlier translation of the identity
	// returned (through a Kept): callers must not modify it.
	Deps        []appmesh.Ref
	EndpointsOf []string
	// EndpointSources says, for each ClusterLoadAssignment built from a
	// node's Cloud Map endpoints (sorted by cluster), how: when only
	// endpoints change, LoadAssignment rebuilds those assignments without
	// translating the proxy again. The other assignments read no
	// endpoints.
	EndpointSources []EndpointSource

	// Secrets lists the secrets the resources ask of the control plane
	// over ADS (SdsSecretConfig with an ads config source), sorted by
	// name, each with the roles it is referenced in. Secrets asked of a
	// local SDS agent, and file certificates, are not listed.
	Secrets []SecretRef
	// LeafDNSNames are the DNS names the proxy's own certificate holds
	// besides its SPIFFE ID, sorted: the node's service discovery name
	// and the virtual services it provides, directly or through a
	// router. Computed only when a secret has the SecretCertificate role.
	LeafDNSNames []string
}

// SecretRole is how a secret is referenced: bits, as one name may be
// referenced in both roles (which nothing can serve).
type SecretRole uint8

// Secret roles.
const (
	// SecretCertificate: in tls_certificate_sds_secret_configs, served as
	// the proxy's own certificate and key.
	SecretCertificate SecretRole = 1 << iota
	// SecretValidation: as a validation_context_sds_secret_config, served
	// as the trust bundle.
	SecretValidation
)

// SecretRef is one secret the translation references over ADS.
type SecretRef struct {
	Name string
	Role SecretRole
}

// EndpointSource is how Translate built one ClusterLoadAssignment from a
// virtual node's Cloud Map instances: LoadAssignment(src,
// v.Endpoints[src.Node]) gives it again.
type EndpointSource struct {
	Cluster string // the assignment's cluster_name
	Node    string // the virtual node whose endpoints it holds
	Port    uint32 // the target listener's port
	// InstancePort: an instance's AWS_INSTANCE_PORT replaces Port (the
	// node has a single listener, which the instance port can stand for).
	InstancePort    bool
	HealthCheckPort uint32               // the endpoints' health check port; 0 for Port
	IPPreference    appmesh.IpPreference // the node's, else the mesh's
}

// ErrNotFound is returned (wrapped) when the mesh or the proxy's virtual
// node or gateway does not exist; App Mesh closed the stream with gRPC
// NotFound then.
var ErrNotFound = errors.New("not found")

// Translate returns every resource one proxy needs, each kind sorted by
// name. No I/O, no clock: the same inputs give the same bytes. v is only
// read. Resources that cannot be built (a route to a node that does not
// exist, a target without a listener) are left out, as App Mesh left them;
// only a missing mesh or proxy resource is an error.
func Translate(v *View, id Identity) (*Resources, error) {
	return translate(v, id, nil)
}

func translate(v *View, id Identity, m *Memo) (*Resources, error) {
	if v == nil || v.Mesh == nil {
		return nil, fmt.Errorf("mesh %q: %w", id.Mesh, ErrNotFound)
	}
	b := newBuild(v, id)
	// A sidecar reads a dozen resources or more: sized once rather than
	// grown (and rehashed) entry by entry.
	b.deps = make(map[appmesh.Ref]struct{}, 16)
	b.memo = m
	b.dep(appmesh.KindMesh, "", id.Mesh)
	var err error
	switch {
	case id.Kind == appmesh.KindVirtualNode && id.Proxyless:
		err = b.proxyless()
	case id.Kind == appmesh.KindVirtualNode:
		err = b.virtualNode()
	case id.Kind == appmesh.KindVirtualGateway && !id.Proxyless:
		err = b.virtualGateway()
	default:
		err = fmt.Errorf("proxy kind %q (proxyless %t): %w", id.Kind, id.Proxyless, errors.ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	b.leafNames()
	return b.result()
}
