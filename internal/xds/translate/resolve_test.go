package translate

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestKeptResolutionsFollowChanges: a virtual service's resolution kept
// from an earlier batch is used only while every resource it read is
// still the View's. Each kind of write that changes a caller's egress
// (a route's weights and match, a router's listener port, a backend added
// or removed, a service's provider switched between router and node, a
// node's discovery switched between DNS and Cloud Map, a client policy's
// TLS) reaches every proxy's next translation, which equals a plain
// Translate of the new View; with nothing changed, every resolution is
// taken as kept.
func TestKeptResolutionsFollowChanges(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 17))
		v := randomMesh(rng)
		kept := NewKept()
		ids := proxies(v, defaultAccount)
		check := func(step string) {
			t.Helper()
			keptEqualsTranslate(t, v, ids, kept, seed, step)
		}
		check("first batch")
		resolved, listeners := len(kept.ports), len(kept.listeners)
		before, beforeListeners := kept.PortsReused(), kept.ListenersReused()
		check("no change")
		if got := kept.PortsReused() - before; got != resolved {
			t.Fatalf("seed %d: %d resolutions taken as kept with nothing changed, want %d", seed, got, resolved)
		}
		// Each at least once: the first caller of a batch builds its
		// egress itself, and the second the Memo's part.
		if got := kept.ListenersReused() - beforeListeners; got < listeners {
			t.Fatalf("seed %d: %d egress listeners taken as kept with nothing changed, want at least %d", seed, got, listeners)
		}

		// Every route's weights and match changed.
		for r, list := range v.Routes {
			next := make([]*appmesh.RouteData, len(list))
			for i, rd := range list {
				c := clone(t, rd)
				if h := c.Spec.HttpRoute; h != nil && h.Action != nil {
					for j := range h.Action.WeightedTargets {
						h.Action.WeightedTargets[j].Weight = ptr(int64(rng.IntN(5)))
					}
					h.Match = &appmesh.HttpRouteMatch{Prefix: ptr("/moved")}
				}
				if tr := c.Spec.TcpRoute; tr != nil && tr.Action != nil && len(tr.Action.WeightedTargets) > 0 {
					tr.Action.WeightedTargets[0].Weight = ptr(int64(7))
				}
				next[i] = c
			}
			v.Routes[r] = next
		}
		check("routes replaced")

		// Every router's listener ports moved.
		for name, vr := range v.VirtualRouters {
			c := clone(t, vr)
			for i := range c.Spec.Listeners {
				if pm := c.Spec.Listeners[i].PortMapping; pm != nil && pm.Port != nil {
					pm.Port = ptr(*pm.Port + 1)
				}
			}
			v.VirtualRouters[name] = c
		}
		check("router ports moved")

		// A backend added to each node, or its first removed.
		services := sortedKeys(v.VirtualServices)
		for name, vn := range v.VirtualNodes {
			c := copyNode(t, vn, name)
			if len(c.Spec.Backends) > 0 && rng.IntN(2) == 0 {
				c.Spec.Backends = c.Spec.Backends[1:]
			} else if len(services) > 0 {
				c.Spec.Backends = append(c.Spec.Backends, appmesh.Backend{VirtualService: &appmesh.VirtualServiceBackend{VirtualServiceName: ptr(pick(rng, services))}})
			}
			v.VirtualNodes[name] = c
		}
		check("backends changed")

		// Each service's provider switched: a router's to a node, a
		// node's to a router (an existing one, or none).
		nodes := sortedKeys(v.VirtualNodes)
		routers := sortedKeys(v.VirtualRouters)
		for name, vs := range v.VirtualServices {
			c := clone(t, vs)
			switch p := c.Spec.Provider; {
			case p != nil && p.VirtualRouter != nil:
				c.Spec.Provider = &appmesh.VirtualServiceProvider{VirtualNode: &appmesh.VirtualNodeServiceProvider{VirtualNodeName: ptr(pick(rng, nodes))}}
			case len(routers) > 0:
				c.Spec.Provider = &appmesh.VirtualServiceProvider{VirtualRouter: &appmesh.VirtualRouterServiceProvider{VirtualRouterName: ptr(pick(rng, routers))}}
			default:
				c.Spec.Provider = nil
			}
			v.VirtualServices[name] = c
		}
		check("providers switched")

		// Each node's discovery switched between DNS and Cloud Map, and
		// its client policy's TLS toggled.
		for name, vn := range v.VirtualNodes {
			c := copyNode(t, vn, name)
			if sd := c.Spec.ServiceDiscovery; sd != nil && sd.AwsCloudMap != nil {
				c.Spec.ServiceDiscovery = &appmesh.ServiceDiscovery{Dns: &appmesh.DnsServiceDiscovery{Hostname: ptr(name + ".moved.local")}}
			} else {
				c.Spec.ServiceDiscovery = &appmesh.ServiceDiscovery{AwsCloudMap: &appmesh.AwsCloudMapServiceDiscovery{NamespaceName: ptr("local"), ServiceName: ptr(name)}}
			}
			if c.Spec.BackendDefaults != nil {
				c.Spec.BackendDefaults = nil
			} else {
				c.Spec.BackendDefaults = &appmesh.BackendDefaults{ClientPolicy: &appmesh.ClientPolicy{Tls: &appmesh.ClientPolicyTls{
					Validation: &appmesh.TlsValidationContext{Trust: &appmesh.TlsValidationContextTrust{File: &appmesh.TlsValidationContextFileTrust{CertificateChain: ptr("/certs/ca.pem")}}},
				}}}
			}
			v.VirtualNodes[name] = c
		}
		clear(v.Endpoints)
		addEndpoints(v)
		check("discovery and client policy switched")
	}
}

// TestKeptResolutionsRouteWrite: a write to one router's route weights
// resolves the service it provides again and takes every other service's
// resolution as kept, and every egress listener (it names route tables,
// not weights).
func TestKeptResolutionsRouteWrite(t *testing.T) {
	v := bigMesh()
	kept := NewKept()
	ids := proxies(v, defaultAccount)
	translateAll := func() {
		t.Helper()
		m := NewMemoKeeping(kept)
		for _, id := range ids {
			if _, err := TranslateWith(v, id, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	translateAll()
	resolved := len(kept.ports)
	var router string
	for name := range v.Routes {
		router = name
		break
	}
	if router == "" || resolved < 2 {
		t.Fatalf("bigMesh: router %q, %d services resolved", router, resolved)
	}
	list := v.Routes[router]
	next := make([]*appmesh.RouteData, len(list))
	for i, rd := range list {
		next[i] = clone(t, rd)
		if h := next[i].Spec.HttpRoute; h != nil && h.Action != nil {
			for j := range h.Action.WeightedTargets {
				h.Action.WeightedTargets[j].Weight = ptr(int64(j + 3))
			}
		}
	}
	v.Routes[router] = next
	providers := 0
	for _, vs := range v.VirtualServices {
		if p := vs.Spec.Provider; p != nil && p.VirtualRouter != nil && str(p.VirtualRouter.VirtualRouterName) == router {
			providers++
		}
	}
	listeners := len(kept.listeners)
	before, beforeListeners := kept.PortsReused(), kept.ListenersReused()
	translateAll()
	if got, want := kept.PortsReused()-before, resolved-providers; got != want {
		t.Fatalf("after a write to %s's routes, %d resolutions taken as kept, want %d (%d resolved, %d services on the router)", router, got, want, resolved, providers)
	}
	if got := kept.ListenersReused() - beforeListeners; got < listeners || listeners == 0 {
		t.Fatalf("after a write to %s's route weights, %d egress listeners taken as kept, want at least %d", router, got, listeners)
	}
	for _, id := range ids {
		want, err := Translate(v, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := TranslateWith(v, id, NewMemoKeeping(kept))
		if err != nil {
			t.Fatal(err)
		}
		if w, g := render(t, id, want), render(t, id, got); !bytes.Equal(w, g) {
			t.Fatalf("%s: with kept parts differs from Translate:\n%s", goldenName(id), firstDiff(w, g))
		}
	}
}

// clone is a deep copy of an App Mesh resource, as the server decodes a
// changed one: a new struct.
func clone[T any](t *testing.T, x *T) *T {
	t.Helper()
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	c := new(T)
	if err := json.Unmarshal(b, c); err != nil {
		t.Fatal(err)
	}
	return c
}
