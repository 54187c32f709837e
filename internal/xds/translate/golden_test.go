package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
)

var update = flag.Bool("update", false, "rewrite the golden files of internal/xds/translate/testdata")

// TestGolden translates every proxy of every case and compares the result
// with testdata/<case>/golden/<proxy>.json: every virtual node (Envoy, and
// proxyless gRPC when it has backends) and every virtual gateway. Every
// result must also pass Check.
func TestGolden(t *testing.T) {
	dirs := caseDirs(t)
	for _, dir := range dirs {
		name := filepath.Base(dir)
		golden := filepath.Join("testdata", name, "golden")
		t.Run(name, func(t *testing.T) {
			v, owner := replay(t, dir)
			addEndpoints(v)
			want := map[string]bool{}
			for _, id := range proxies(v, owner) {
				file := goldenName(id)
				want[file] = true
				t.Run(strings.TrimSuffix(file, ".json"), func(t *testing.T) {
					res, err := Translate(v, id)
					if err != nil {
						t.Fatalf("Translate: %v", err)
					}
					if err := Check(res); err != nil {
						t.Errorf("Check:\n%v", err)
					}
					compareGolden(t, filepath.Join(golden, file), render(t, id, res))
				})
			}
			staleGoldens(t, golden, want)
		})
	}
}

// TestGoldenRefusesHTTP10: no connection manager of any golden sets
// http_protocol_options, accept_http_10 among them. App Mesh's Envoy
// never did: its proxies refused HTTP/1.0 requests with 426 Upgrade
// Required (Envoy's default), and weft proxy does the same for the
// configurations weft serves.
func TestGoldenRefusesHTTP10(t *testing.T) {
	files, err := filepath.Glob("testdata/*/golden/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no goldens: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(`"http_protocol_options"`)) || bytes.Contains(b, []byte(`"accept_http_10"`)) {
			t.Errorf("%s: a connection manager sets http_protocol_options", f)
		}
	}
}

// corpusDir is the repository's copy of the App Mesh examples corpus, whose
// cases are read in place; their goldens live in testdata/<case>/golden.
const corpusDir = "../../../testdata/appmesh-examples"

// caseDirs lists the folders holding a case's steps.json and inputs: every
// case of the corpus, and the cases of our own (tutorial, features) that
// live in testdata beside their goldens.
func caseDirs(t *testing.T) []string {
	t.Helper()
	corpus, err := filepath.Glob(filepath.Join(corpusDir, "*", "steps.json"))
	if err != nil || len(corpus) != 28 {
		t.Fatalf("want the 28 cases of %s, found %d (%v)", corpusDir, len(corpus), err)
	}
	own, err := filepath.Glob("testdata/*/steps.json")
	if err != nil || len(own) == 0 {
		t.Fatalf("no cases of our own in testdata: %v", err)
	}
	var dirs []string
	for _, s := range append(corpus, own...) {
		dirs = append(dirs, filepath.Dir(s))
	}
	return dirs
}

// proxies lists the identities a case's mesh serves.
func proxies(v *View, owner string) []Identity {
	mesh := *v.Mesh.MeshName
	var ids []Identity
	for _, n := range sortedKeys(v.VirtualNodes) {
		ids = append(ids, Identity{MeshOwner: owner, Mesh: mesh, Kind: appmesh.KindVirtualNode, Name: n})
		if vn := v.VirtualNodes[n]; vn.Spec != nil && len(vn.Spec.Backends) > 0 {
			ids = append(ids, Identity{MeshOwner: owner, Mesh: mesh, Kind: appmesh.KindVirtualNode, Name: n, Proxyless: true})
		}
	}
	for _, n := range sortedKeys(v.VirtualGateways) {
		ids = append(ids, Identity{MeshOwner: owner, Mesh: mesh, Kind: appmesh.KindVirtualGateway, Name: n})
	}
	return ids
}

func goldenName(id Identity) string {
	kind := string(id.Kind)
	if id.Proxyless {
		kind = "proxyless"
	}
	return kind + "-" + id.Name + ".json"
}

// render is the golden form of one proxy's resources: protojson with
// Envoy's field names, re-indented by encoding/json because protojson's
// own spacing is deliberately unstable.
func render(t *testing.T, id Identity, r *Resources) []byte {
	t.Helper()
	type identity struct {
		MeshOwner string `json:"meshOwner"`
		Mesh      string `json:"mesh"`
		Kind      string `json:"kind"`
		Name      string `json:"name"`
		Proxyless bool   `json:"proxyless,omitempty"`
	}
	type golden struct {
		Identity    identity          `json:"identity"`
		Listeners   []json.RawMessage `json:"listeners"`
		Routes      []json.RawMessage `json:"routes"`
		Clusters    []json.RawMessage `json:"clusters"`
		Endpoints   []json.RawMessage `json:"endpoints"`
		Deps        []string          `json:"deps"`
		EndpointsOf []string          `json:"endpointsOf"`
		// Secrets are name: role, for the ADS secrets referenced.
		Secrets      map[string]string `json:"secrets,omitempty"`
		LeafDNSNames []string          `json:"leafDnsNames,omitempty"`
	}
	// Empty lists print as [] rather than null.
	g := golden{Identity: identity{id.MeshOwner, id.Mesh, string(id.Kind), id.Name, id.Proxyless},
		Listeners: []json.RawMessage{}, Routes: []json.RawMessage{}, Clusters: []json.RawMessage{}, Endpoints: []json.RawMessage{},
		Deps: []string{}, EndpointsOf: append([]string{}, r.EndpointsOf...)}
	for _, m := range r.Listeners {
		g.Listeners = append(g.Listeners, protoJSON(t, m))
	}
	for _, m := range r.Routes {
		g.Routes = append(g.Routes, protoJSON(t, m))
	}
	for _, m := range r.Clusters {
		g.Clusters = append(g.Clusters, protoJSON(t, m))
	}
	for _, m := range r.Endpoints {
		g.Endpoints = append(g.Endpoints, protoJSON(t, m))
	}
	for _, d := range r.Deps {
		g.Deps = append(g.Deps, refString(d))
	}
	if len(r.Secrets) > 0 {
		g.Secrets = map[string]string{}
		for _, s := range r.Secrets {
			g.Secrets[s.Name] = roleString(s.Role)
		}
	}
	g.LeafDNSNames = r.LeafDNSNames
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func refString(r appmesh.Ref) string {
	s := string(r.Kind) + "/"
	if r.Parent != "" {
		s += r.Parent + "/"
	}
	if r.Name == "" {
		return s + "*"
	}
	return s + r.Name
}

func protoJSON(t *testing.T, m proto.Message) json.RawMessage {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v\nto create it: go test ./internal/xds/translate -run TestGolden -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the translation:\n%s\nif the change is intended: go test ./internal/xds/translate -run TestGolden -update, then review git diff",
			path, firstDiff(want, got))
	}
}

// staleGoldens fails on golden files no proxy produces any more (or deletes
// them with -update).
func staleGoldens(t *testing.T, dir string, want map[string]bool) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if want[filepath.Base(f)] {
			continue
		}
		if *update {
			os.Remove(f)
			continue
		}
		t.Errorf("%s: no such proxy any more; go test ./internal/xds/translate -run TestGolden -update removes it", f)
	}
}

// firstDiff shows the first differing line with some context.
func firstDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  golden: " + wl + "\n  now:    " + gl
		}
	}
	return "(same lines, different bytes)"
}

func roleString(r SecretRole) string {
	switch r {
	case SecretCertificate:
		return "certificate"
	case SecretValidation:
		return "validation"
	}
	return "certificate+validation"
}
