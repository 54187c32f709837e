package server

import (
	"encoding/json"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/console"
	"github.com/weftmesh/weft/internal/console/consoletest"
)

// snapshotAuthFile: an admin, and a console user who may read the event
// stream but Describe only node blue and the router's routes.
const snapshotAuthFile = `
keys:
  - id: AKIDADMIN
    secret: admin-secret
    account: "111122223333"
    allow:
      - actions: ["appmesh:*", "weft:*"]
        resources: ["*"]
  - id: AKIDPART
    secret: part-secret
    account: "111122223333"
    allow:
      - actions: ["weft:GetEvents"]
        resources: ["*"]
      - actions: ["appmesh:DescribeVirtualNode"]
        resources: ["arn:aws:appmesh:*:111122223333:mesh/m/virtualNode/blue"]
      - actions: ["appmesh:DescribeRoute"]
        resources: ["arn:aws:appmesh:*:111122223333:mesh/m/virtualRouter/r/route/*"]
`

// sse is an open /v1/events stream of a test.
type sse struct {
	t *testing.T
	s *consoletest.Stream
}

func openEvents(t *testing.T, c *http.Client, url string, hdr map[string]string) *sse {
	t.Helper()
	return &sse{t: t, s: consoletest.OpenWith(t, c, url, hdr)}
}

func (s *sse) next() (string, string) {
	s.t.Helper()
	ev := s.s.Next(s.t, 10*time.Second)
	return ev.Type, ev.Data
}

// snapshot reads hello, the snapshot events and snapshot-end.
func (s *sse) snapshot() map[string]console.Resource {
	s.t.Helper()
	if typ, data := s.next(); typ != "hello" || !strings.Contains(data, `"snapshot":true`) {
		s.t.Fatalf("first event %s %s", typ, data)
	}
	got := map[string]console.Resource{}
	for {
		typ, data := s.next()
		switch typ {
		case "snapshot":
			var chunk struct{ Resources []console.Resource }
			if err := json.Unmarshal([]byte(data), &chunk); err != nil {
				s.t.Fatal(err)
			}
			for _, r := range chunk.Resources {
				got[string(r.Kind)+":"+r.Parent+"/"+r.Name] = r
			}
		case "snapshot-end":
			if !strings.Contains(data, `"complete":true`) {
				s.t.Fatalf("snapshot-end %s", data)
			}
			return got
		default:
			s.t.Fatalf("%s event inside the snapshot: %s", typ, data)
		}
	}
}

func keysOf(m map[string]console.Resource) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

// TestEventsSnapshot: GET /v1/events?snapshot=true sends the mesh's
// resources as their Describe returns them, and with a credentials file
// only those the caller may Describe; change events name only those too.
func TestEventsSnapshot(t *testing.T) {
	e := newAuthEnv(t, snapshotAuthFile)
	admin := newConsoleClient(t, e.url)
	if resp := admin.signIn("AKIDADMIN", "admin-secret"); resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	csrf := map[string]string{console.CSRFHeader: admin.csrf}
	put := func(path, body string) {
		t.Helper()
		if resp, b := admin.do("PUT", path, body, csrf); resp.StatusCode != 200 {
			t.Fatalf("PUT %s: %d %s", path, resp.StatusCode, b)
		}
	}
	put("/v20190125/meshes", `{"meshName":"m"}`)
	put("/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"blue","spec":{}}`)
	put("/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"red","spec":{}}`)
	put("/v20190125/meshes/m/virtualRouters", `{"virtualRouterName":"r","spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`)
	put("/v20190125/meshes/m/virtualRouter/r/routes", `{"routeName":"rt","spec":{"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"blue","weight":4},{"virtualNode":"red","weight":1}]}}}}`)

	all := openEvents(t, admin.c, e.url+"/v1/events?mesh=m&snapshot=true", csrf).snapshot()
	if got := keysOf(all); got != "route:r/rt virtualNode:/blue virtualNode:/red virtualRouter:/r" {
		t.Fatalf("admin's snapshot: %s", got)
	}
	// Each resource as its Describe returns it.
	resp, body := admin.do("GET", "/v20190125/meshes/m/virtualRouter/r/routes/rt", "", csrf)
	var described, sent any
	json.Unmarshal([]byte(body), &described)
	json.Unmarshal(all["route:r/rt"].Data, &sent)
	if resp.StatusCode != 200 || jsonOf(described) != jsonOf(sent) {
		t.Fatalf("snapshot's route %s, Describe's %d %s", all["route:r/rt"].Data, resp.StatusCode, body)
	}

	part := newConsoleClient(t, e.url)
	if resp := part.signIn("AKIDPART", "part-secret"); resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	pcsrf := map[string]string{console.CSRFHeader: part.csrf}
	stream := openEvents(t, part.c, e.url+"/v1/events?mesh=m&snapshot=true", pcsrf)
	if got := keysOf(stream.snapshot()); got != "route:r/rt virtualNode:/blue" {
		t.Fatalf("snapshot of a key that may Describe node blue and the routes: %s", got)
	}
	// The same key's Describe agrees.
	for path, want := range map[string]int{"/v20190125/meshes/m/virtualNodes/blue": 200, "/v20190125/meshes/m/virtualNodes/red": 403} {
		if resp, b := part.do("GET", path, "", pcsrf); resp.StatusCode != want {
			t.Fatalf("GET %s as AKIDPART: %d %s, want %d", path, resp.StatusCode, b, want)
		}
	}
	// red changes first, then blue: the stream names blue only.
	put("/v20190125/meshes/m/virtualNodes/red", `{"spec":{"backends":[]}}`)
	put("/v20190125/meshes/m/virtualNodes/blue", `{"spec":{"backends":[]}}`)
	typ, data := stream.next()
	var ev console.Event
	json.Unmarshal([]byte(data), &ev)
	if typ != "change" || ev.Name != "blue" {
		t.Fatalf("first change seen by AKIDPART: %s %s, want blue's", typ, data)
	}

	t.Run("bad input", func(t *testing.T) {
		resp, b := admin.do("GET", "/v1/events?mesh=m&snapshot=true&after=1", "", csrf)
		wantStatus(t, resp, b, 400, "BadRequestException")
	})

	// The credentials file changes: AKIDPART may no longer read events.
	// Its open stream ends with "reconnect", and connecting again is
	// refused (before, the stream kept the old policy up to its maximum
	// age, 15 minutes). The stream is the parent test's: not a subtest.
	narrowed := strings.Replace(snapshotAuthFile, `["weft:GetEvents"]`, `["appmesh:ListMeshes"]`, 1)
	if narrowed == snapshotAuthFile {
		t.Fatal("the test's credentials file no longer has the statement to narrow")
	}
	if err := os.WriteFile(e.cfg.AuthFile, []byte(narrowed), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := e.sec.keys.Reload(); !changed || err != nil {
		t.Fatalf("reload: %v %v", changed, err)
	}
	typ, data = stream.next()
	if typ != "reconnect" || !strings.Contains(data, "credentials changed") {
		t.Fatalf("after the credentials changed: %s %s, want reconnect", typ, data)
	}
	resp, b := part.do("GET", "/v1/events?mesh=m&snapshot=true", "", pcsrf)
	wantStatus(t, resp, b, 403, "AccessDeniedException")

	t.Run("no credentials file", func(t *testing.T) {
		open := newAuthEnv(t, "")
		cc := newConsoleClient(t, open.url)
		if resp, b := cc.do("PUT", "/v20190125/meshes", `{"meshName":"m"}`, nil); resp.StatusCode != 200 {
			t.Fatalf("create mesh: %d %s", resp.StatusCode, b)
		}
		if resp, b := cc.do("PUT", "/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"n","spec":{}}`, nil); resp.StatusCode != 200 {
			t.Fatalf("create node: %d %s", resp.StatusCode, b)
		}
		if got := keysOf(openEvents(t, cc.c, open.url+"/v1/events?mesh=m&snapshot=true", nil).snapshot()); got != "virtualNode:/n" {
			t.Fatalf("snapshot: %s", got)
		}
	})
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
