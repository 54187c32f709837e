package server

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// randomWrite makes one random change to mesh m's nodes n0..n4, services
// s0..s3 (provided by a node, a router or nothing), routers r0 and r1 and
// their routes, and the Cloud Map instances of the nodes.
func randomWrite(rnd *rand.Rand, t *testing.T, st store.Store) {
	randomWriteKind(rnd, t, st, rnd.IntN(10))
}

// randomWriteTwoBackendSets is randomWrite with every node's backends
// either s0 and s1, or s2.
func randomWriteTwoBackendSets(rnd *rand.Rand, t *testing.T, st store.Store) {
	kind := rnd.IntN(10)
	if kind != 1 {
		randomWriteKind(rnd, t, st, kind)
		return
	}
	node := fmt.Sprintf("n%d", rnd.IntN(5))
	if rnd.IntN(2) == 0 {
		putNodeMaybeTLS(rnd, t, st, node, "s0", "s1")
	} else {
		putNodeMaybeTLS(rnd, t, st, node, "s2")
	}
}

// randomWriteHostsOnly is randomWrite with, as often, a route write that
// changes only what the route does: routes rt0 and rt1 of each router
// always target the same nodes, with random weights (some all zero),
// prefix, priority, timeouts and retries; now and then a route of the
// same name with other targets, or a TCP route, breaks the pattern, and
// the mesh's egress filter changes.
func randomWriteHostsOnly(rnd *rand.Rand, t *testing.T, st store.Store) {
	if rnd.IntN(2) == 0 {
		randomWriteKind(rnd, t, st, rnd.IntN(10))
		return
	}
	router := fmt.Sprintf("r%d", rnd.IntN(2))
	k := rnd.IntN(2)
	route := fmt.Sprintf("rt%d", k)
	a, b := fmt.Sprintf("n%d", k), fmt.Sprintf("n%d", k+2)
	switch rnd.IntN(12) {
	case 0:
		b = fmt.Sprintf("n%d", rnd.IntN(5))
	case 2:
		// The mesh's egress filter: ALLOW_ALL adds a host of its own to
		// each egress route table, which the route writes leave as it is.
		filter := "DROP_ALL"
		if rnd.IntN(2) == 0 {
			filter = "ALLOW_ALL"
		}
		putRaw(t, st, ref("m", appmesh.KindMesh, "", "m"), fmt.Sprintf(`{"meshName":"m","spec":{"egressFilter":{"type":%q}}}`, filter))
		return
	case 1:
		putRaw(t, st, ref("m", appmesh.KindRoute, router, route), fmt.Sprintf(
			`{"meshName":"m","virtualRouterName":%q,"routeName":%q,"spec":{"tcpRoute":{"action":{"weightedTargets":[{"virtualNode":%q,"weight":1}]}}}}`,
			router, route, a))
		return
	}
	var extra string
	if rnd.IntN(2) == 0 {
		extra += fmt.Sprintf(`,"timeout":{"perRequest":{"unit":"ms","value":%d}}`, 100*(1+rnd.IntN(50)))
	}
	if rnd.IntN(2) == 0 {
		extra += fmt.Sprintf(`,"retryPolicy":{"httpRetryEvents":["server-error"],"maxRetries":%d,"perRetryTimeout":{"unit":"ms","value":%d}}`, rnd.IntN(4), 100*(1+rnd.IntN(9)))
	}
	// A method match: a proxyless gRPC client leaves out a route whose
	// method is not POST, and its targets' clusters with it, so a write
	// that changes it must reach proxyless clients whole.
	method := []string{"", `,"method":"GET"`, `,"method":"POST"`}[rnd.IntN(3)]
	putRaw(t, st, ref("m", appmesh.KindRoute, router, route), fmt.Sprintf(
		`{"meshName":"m","virtualRouterName":%q,"routeName":%q,"spec":{"priority":%d,"httpRoute":{"match":{"prefix":"/%s%d"%s},
		"action":{"weightedTargets":[{"virtualNode":%q,"weight":%d},{"virtualNode":%q,"weight":%d}]}%s}}}`,
		router, route, rnd.IntN(3), route, rnd.IntN(3), method, a, rnd.IntN(5), b, rnd.IntN(5), extra))
}

// scriptThen makes the writes of script, in order, then those of gen.
func scriptThen(script []func(*testing.T, store.Store), gen func(*rand.Rand, *testing.T, store.Store)) func(*rand.Rand, *testing.T, store.Store) {
	i := 0
	return func(rnd *rand.Rand, t *testing.T, st store.Store) {
		if i < len(script) {
			i++
			script[i-1](t, st)
			return
		}
		gen(rnd, t, st)
	}
}

// flavourScript: in meshes m and m2 alike, service s0 routed by r0 to
// n2 and n3, called by n0, first with both weights 0; then one batch
// sets both weights to 1 in both meshes. n0's tables, as a sidecar and
// as a proxyless client, in either mesh, have the same content before.
var flavourScript = func() []func(*testing.T, store.Store) {
	var script []func(*testing.T, store.Store)
	for _, mesh := range []string{"m", "m2"} {
		script = append(script,
			func(t *testing.T, st store.Store) { putMesh(t, st, mesh) },
			func(t *testing.T, st store.Store) {
				put(t, st, ref(mesh, appmesh.KindVirtualNode, "", "n2").Key(), nodeData(mesh, "n2"))
			},
			func(t *testing.T, st store.Store) {
				put(t, st, ref(mesh, appmesh.KindVirtualNode, "", "n3").Key(), nodeData(mesh, "n3"))
			},
			func(t *testing.T, st store.Store) {
				putRaw(t, st, ref(mesh, appmesh.KindVirtualRouter, "", "r0"), fmt.Sprintf(
					`{"meshName":%q,"virtualRouterName":"r0","spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`, mesh))
			},
			func(t *testing.T, st store.Store) {
				putRaw(t, st, ref(mesh, appmesh.KindVirtualService, "", "s0"), fmt.Sprintf(
					`{"meshName":%q,"virtualServiceName":"s0","spec":{"provider":{"virtualRouter":{"virtualRouterName":"r0"}}}}`, mesh))
			},
			func(t *testing.T, st store.Store) { flavourRoute(t, st, mesh, 0) },
			func(t *testing.T, st store.Store) {
				put(t, st, ref(mesh, appmesh.KindVirtualNode, "", "n0").Key(), nodeData(mesh, "n0", "s0"))
			})
	}
	return append(script, func(t *testing.T, st store.Store) {
		flavourRoute(t, st, "m", 1)
		flavourRoute(t, st, "m2", 1)
	})
}()

func flavourRoute(t *testing.T, st store.Store, mesh string, weight int) {
	putRaw(t, st, ref(mesh, appmesh.KindRoute, "r0", "rt0"), fmt.Sprintf(
		`{"meshName":%q,"virtualRouterName":"r0","routeName":"rt0","spec":{"httpRoute":{"match":{"prefix":"/"},
		"action":{"weightedTargets":[{"virtualNode":"n2","weight":%d},{"virtualNode":"n3","weight":%d}]}}}}`, mesh, weight, weight))
}

// randomWriteGateway is randomWriteHostsOnly with, a quarter of the time
// each, a write of gateway g0 or its routes (randomGateway) and a write
// that makes a node, a service's provider (a router, twice as often as a
// node or nothing), a router or an instance.
func randomWriteGateway(rnd *rand.Rand, t *testing.T, st store.Store) {
	switch rnd.IntN(4) {
	case 0:
		randomGateway(rnd, t, st)
	case 1:
		randomWriteKind(rnd, t, st, []int{1, 3, 4, 6, 9, 9}[rnd.IntN(6)])
	default:
		randomWriteHostsOnly(rnd, t, st)
	}
}

// randomGateway writes or deletes gateway g0 of mesh m, or one of its
// gateway routes gr0 and gr1 to a random service (s0..s3), which keeps
// the request's host half of the time.
func randomGateway(rnd *rand.Rand, t *testing.T, st store.Store) {
	switch rnd.IntN(6) {
	case 0:
		del(t, st, ref("m", appmesh.KindVirtualGateway, "", "g0").Key())
	case 1, 2:
		putRaw(t, st, ref("m", appmesh.KindVirtualGateway, "", "g0"),
			`{"meshName":"m","virtualGatewayName":"g0","spec":{"listeners":[{"portMapping":{"port":9080,"protocol":"http"}}]}}`)
	default:
		gr := fmt.Sprintf("gr%d", rnd.IntN(2))
		svc := fmt.Sprintf("s%d", rnd.IntN(4))
		rewrite := ""
		if rnd.IntN(2) == 0 {
			rewrite = `,"rewrite":{"hostname":{"defaultTargetHostname":"DISABLED"}}`
		}
		putRaw(t, st, ref("m", appmesh.KindGatewayRoute, "g0", gr), fmt.Sprintf(
			`{"meshName":"m","virtualGatewayName":"g0","gatewayRouteName":%q,"spec":{"httpRoute":{"match":{"prefix":"/%s"},
			"action":{"target":{"virtualService":{"virtualServiceName":%q}}%s}}}}`, gr, gr, svc, rewrite))
	}
}

// randomWriteKind makes one random write of the given kind (0 to 9; 0
// deletes a node).
func randomWriteKind(rnd *rand.Rand, t *testing.T, st store.Store, kind int) {
	node := fmt.Sprintf("n%d", rnd.IntN(5))
	svc := fmt.Sprintf("s%d", rnd.IntN(4))
	router := fmt.Sprintf("r%d", rnd.IntN(2))
	switch kind {
	case 0:
		del(t, st, ref("m", appmesh.KindVirtualNode, "", node).Key())
	case 1:
		var backends []string
		for j := range 4 {
			if rnd.IntN(2) == 0 {
				backends = append(backends, fmt.Sprintf("s%d", j))
			}
		}
		putNodeMaybeTLS(rnd, t, st, node, backends...)
	case 2:
		del(t, st, ref("m", appmesh.KindVirtualService, "", svc).Key())
	case 3:
		provider := node
		if rnd.IntN(4) == 0 {
			provider = ""
		}
		putService(t, st, "m", svc, provider)
	case 4:
		putCMService(t, st, node)
		putInstance(t, st, node, fmt.Sprintf("i%d", rnd.IntN(3)), fmt.Sprintf("10.0.0.%d", rnd.IntN(250)+1))
	case 5:
		del(t, st, cloudmap.InstanceKey("srv-"+node, fmt.Sprintf("i%d", rnd.IntN(3))))
	case 6:
		putRaw(t, st, ref("m", appmesh.KindVirtualRouter, "", router), fmt.Sprintf(
			`{"meshName":"m","virtualRouterName":%q,"spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`, router))
	case 7:
		del(t, st, ref("m", appmesh.KindVirtualRouter, "", router).Key())
	case 8:
		route := fmt.Sprintf("rt%d", rnd.IntN(2))
		if rnd.IntN(3) == 0 {
			del(t, st, ref("m", appmesh.KindRoute, router, route).Key())
			return
		}
		putRaw(t, st, ref("m", appmesh.KindRoute, router, route), fmt.Sprintf(
			`{"meshName":"m","virtualRouterName":%q,"routeName":%q,"spec":{"priority":%d,"httpRoute":{"match":{"prefix":"/%s"},
			"action":{"weightedTargets":[{"virtualNode":%q,"weight":%d},{"virtualNode":"n%d","weight":1}]}}}}`,
			router, route, rnd.IntN(3), route, node, rnd.IntN(5), rnd.IntN(5)))
	case 9:
		putRaw(t, st, ref("m", appmesh.KindVirtualService, "", svc), fmt.Sprintf(
			`{"meshName":"m","virtualServiceName":%q,"spec":{"provider":{"virtualRouter":{"virtualRouterName":%q}}}}`, svc, router))
	}
}

// putNodeMaybeTLS writes a node, half of the time with a STRICT mutual
// TLS listener whose certificate and trust are secrets weft serves.
func putNodeMaybeTLS(rnd *rand.Rand, t *testing.T, st store.Store, node string, backends ...string) {
	vn := nodeData("m", node, backends...)
	if rnd.IntN(2) == 0 {
		vn.Spec.Listeners[0].Tls = &appmesh.ListenerTls{Mode: appmesh.ListenerTlsModeStrict,
			Certificate: &appmesh.ListenerTlsCertificate{Sds: &appmesh.ListenerTlsSdsCertificate{SecretName: ptr("cert")}},
			Validation: &appmesh.ListenerTlsValidationContext{Trust: &appmesh.ListenerTlsValidationContextTrust{
				Sds: &appmesh.TlsValidationContextSdsTrust{SecretName: ptr("trust")}}}}
	}
	put(t, st, ref("m", appmesh.KindVirtualNode, "", node).Key(), vn)
}
