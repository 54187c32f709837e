package translate

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestMemoSameAsTranslate: translations sharing a Memo give exactly what
// Translate gives, for every proxy of every case and of random meshes, in
// any order, with twins (nodes whose egress inputs are equal) sharing
// their egress.
func TestMemoSameAsTranslate(t *testing.T) {
	var views []*View
	var owners []string
	for _, dir := range caseDirs(t) {
		v, owner := replay(t, dir)
		addEndpoints(v)
		addTwins(t, v)
		views, owners = append(views, v), append(owners, owner)
	}
	for seed := range uint64(100) {
		v := randomMesh(rand.New(rand.NewPCG(seed, 7)))
		addTwins(t, v)
		views, owners = append(views, v), append(owners, defaultAccount)
	}
	shared, clusters, reused := 0, 0, 0
	for i, v := range views {
		ids := proxies(v, owners[i])
		want := make([][]byte, len(ids))
		wantSrc := make([][]EndpointSource, len(ids))
		for j, id := range ids {
			r, err := Translate(v, id)
			if err != nil {
				t.Fatalf("%s: %v", goldenName(id), err)
			}
			want[j], wantSrc[j] = render(t, id, r), r.EndpointSources
		}
		kept := NewKept()
		m := NewMemoKeeping(kept)
		// Twice, the second time backwards, so that parts are both built
		// and reused by every identity; a third time with a new Memo (the
		// next batch), which takes each ingress from kept.
		for pass := range 3 {
			if pass == 2 {
				shared += m.Shared()
				clusters += m.SharedClusters()
				m = NewMemoKeeping(kept)
			}
			for k := range ids {
				j := k
				if pass == 1 {
					j = len(ids) - 1 - k
				}
				r, err := TranslateWith(v, ids[j], m)
				if err != nil {
					t.Fatalf("%s: %v", goldenName(ids[j]), err)
				}
				if got := render(t, ids[j], r); !bytes.Equal(got, want[j]) {
					t.Fatalf("view %d %s, pass %d: with a Memo differs from Translate:\n%s", i, goldenName(ids[j]), pass, firstDiff(want[j], got))
				}
				if !reflect.DeepEqual(r.EndpointSources, wantSrc[j]) {
					t.Fatalf("view %d %s: endpoint sources %+v, want %+v", i, goldenName(ids[j]), r.EndpointSources, wantSrc[j])
				}
			}
		}
		reused += kept.Reused()
	}
	if reused == 0 {
		t.Fatal("no translation took its ingress from a Kept")
	}
	if shared == 0 {
		t.Fatal("no translation shared an egress: the twins should have")
	}
	if clusters == 0 {
		t.Fatal("no translation took a cluster from the Memo")
	}
	t.Logf("%d translations took their egress from a Memo, %d clusters; %d their ingress from a Kept", shared, clusters, reused)
}

// addTwins adds, for each virtual node, one with another name and the same
// spec (a copy), whose egress is the original's, and one that differs only
// in its backend defaults (TLS to its backends), whose egress is not.
func addTwins(t *testing.T, v *View) {
	t.Helper()
	for _, n := range sortedKeys(v.VirtualNodes) {
		twin := copyNode(t, v.VirtualNodes[n], n+"-twin")
		v.VirtualNodes[*twin.VirtualNodeName] = twin
		v.Endpoints[*twin.VirtualNodeName] = v.Endpoints[n]
		other := copyNode(t, v.VirtualNodes[n], n+"-tls")
		if other.Spec == nil {
			continue
		}
		if other.Spec.BackendDefaults != nil {
			other.Spec.BackendDefaults = nil
		} else {
			other.Spec.BackendDefaults = &appmesh.BackendDefaults{ClientPolicy: &appmesh.ClientPolicy{Tls: &appmesh.ClientPolicyTls{
				Enforce:    ptr(true),
				Validation: &appmesh.TlsValidationContext{Trust: &appmesh.TlsValidationContextTrust{File: &appmesh.TlsValidationContextFileTrust{CertificateChain: ptr("/certs/ca.pem")}}},
			}}}
		}
		v.VirtualNodes[*other.VirtualNodeName] = other
		v.Endpoints[*other.VirtualNodeName] = v.Endpoints[n]
	}
}

func copyNode(t *testing.T, vn *appmesh.VirtualNodeData, name string) *appmesh.VirtualNodeData {
	t.Helper()
	b, err := json.Marshal(vn)
	if err != nil {
		t.Fatal(err)
	}
	var c appmesh.VirtualNodeData
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	c.VirtualNodeName = &name
	return &c
}

// TestMemoSharesClusters: nodes whose backends differ (each a window of
// bigMesh's services, so no two share an egress) share the clusters of
// the backends they have in common, and still get exactly what Translate
// gives them; a node with its own client policy toward a backend gets its
// own cluster, with TLS, while the virtual host of the service is the
// same for all; and a change to a shared target reaches every
// node through the next View, even with the same Memo.
func TestMemoSharesClusters(t *testing.T) {
	v := bigMesh()
	// node-8 validates TLS toward svc-10 (its own policy, no other has it).
	n8 := copyNode(t, v.VirtualNodes["node-8"], "node-8")
	for i, be := range n8.Spec.Backends {
		if str(be.VirtualService.VirtualServiceName) == "svc-10.big.local" {
			n8.Spec.Backends[i].VirtualService.ClientPolicy = &appmesh.ClientPolicy{Tls: &appmesh.ClientPolicyTls{
				Validation: &appmesh.TlsValidationContext{Trust: &appmesh.TlsValidationContextTrust{File: &appmesh.TlsValidationContextFileTrust{CertificateChain: ptr("/certs/ca.pem")}}}}}
		}
	}
	v.VirtualNodes["node-8"] = n8
	// The same nodes in a second View where svc-10's provider listens on
	// another port, with a health check.
	v2 := bigMesh()
	v2.VirtualNodes["node-8"] = n8
	n10 := copyNode(t, v2.VirtualNodes["node-10"], "node-10")
	n10.Spec.Listeners[0].PortMapping.Port = ptr(int64(9090))
	n10.Spec.Listeners[0].HealthCheck = &appmesh.HealthCheckPolicy{Protocol: appmesh.PortProtocolHttp, Path: ptr("/ping"),
		HealthyThreshold: ptr(int64(2)), UnhealthyThreshold: ptr(int64(2)), IntervalMillis: ptr(int64(5000)), TimeoutMillis: ptr(int64(2000))}
	v2.VirtualNodes["node-10"] = n10

	m := NewMemo()
	clusterOf := map[string]map[string]*clusterv3.Cluster{} // by cluster name and node, the cluster of svc-10's target
	hostOf := map[string]*routev3.VirtualHost{}             // by node, svc-10's virtual host in the first view
	target := egressClusterName("big", "node-10", appmesh.PortProtocolHttp, 8080)
	target2 := egressClusterName("big", "node-10", appmesh.PortProtocolHttp, 9090)
	for vi, view := range []*View{v, v2} {
		for _, node := range []string{"node-5", "node-7", "node-8", "node-9"} {
			id := Identity{MeshOwner: defaultAccount, Mesh: "big", Kind: appmesh.KindVirtualNode, Name: node}
			want, err := Translate(view, id)
			if err != nil {
				t.Fatal(err)
			}
			got, err := TranslateWith(view, id, m)
			if err != nil {
				t.Fatal(err)
			}
			if w, g := render(t, id, want), render(t, id, got); !bytes.Equal(w, g) {
				t.Fatalf("view %d %s: with a Memo differs from Translate:\n%s", vi, node, firstDiff(w, g))
			}
			for _, rc := range got.Routes {
				for _, vh := range rc.GetVirtualHosts() {
					if vh.GetName() == "svc-10.big.local" && vi == 0 {
						hostOf[node] = vh
					}
				}
			}
			for _, c := range got.Clusters {
				if c.GetName() == target || c.GetName() == target2 {
					if clusterOf[c.GetName()] == nil {
						clusterOf[c.GetName()] = map[string]*clusterv3.Cluster{}
					}
					clusterOf[c.GetName()][node] = c
				}
			}
		}
	}
	if m.Shared() != 0 {
		t.Fatalf("%d egresses shared: no two of these nodes have the same backends", m.Shared())
	}
	if m.SharedClusters() == 0 {
		t.Fatal("no cluster shared between nodes with common backends")
	}
	if hostOf["node-7"] == nil || hostOf["node-7"] != hostOf["node-8"] || hostOf["node-8"] != hostOf["node-9"] {
		t.Fatal("svc-10's virtual host is not shared by its callers (node-8's own policy changes its cluster, not the host)")
	}
	old, cur := clusterOf[target], clusterOf[target2]
	if old["node-7"] == nil || old["node-7"] != old["node-9"] {
		t.Fatalf("node-7 and node-9 do not share the cluster %s", target)
	}
	if old["node-8"] == old["node-7"] || old["node-8"].GetTransportSocket() == nil || old["node-7"].GetTransportSocket() != nil {
		t.Fatalf("node-8's cluster %s is not its own, with TLS", target)
	}
	if cur["node-7"] == nil || cur["node-7"] != cur["node-9"] || len(cur["node-7"].GetHealthChecks()) != 1 {
		t.Fatalf("the second view's cluster %s is not the changed one, shared: %v", target2, cur)
	}
}
