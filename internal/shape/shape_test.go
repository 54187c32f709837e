package shape_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/shape"
)

func decode(t *testing.T, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestValidateAppMesh(t *testing.T) {
	m := appmesh.Model()
	cases := []struct {
		name, shape, doc, want string // want: substring of the message, "" for valid
	}{
		{"valid node", "CreateVirtualNodeInput", `{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"}}]}}`, ""},
		{"missing required", "CreateVirtualNodeInput", `{"meshName":"m","spec":{}}`, "Value null at 'virtualNodeName' failed to satisfy constraint: Member must not be null"},
		{"nested required", "CreateVirtualNodeInput", `{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{}]}}`, "at 'spec.listeners.1.member.portMapping'"},
		{"enum", "CreateVirtualNodeInput", `{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":80,"protocol":"udp"}}]}}`, "Member must satisfy enum value set: [http, tcp, http2, grpc]"},
		{"range", "CreateVirtualNodeInput", `{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":70000,"protocol":"http"}}]}}`, "less than or equal to 65535"},
		{"wrong type", "CreateVirtualNodeInput", `{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":"80","protocol":"http"}}]}}`, "Value '80' at 'spec.listeners.1.member.portMapping.port' failed to satisfy constraint: Member must be a number"},
		{"not an integer", "CreateVirtualNodeInput", `{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":8.5,"protocol":"http"}}]}}`, "Member must be an integer"},
		{"length", "CreateMeshInput", `{"meshName":""}`, "Member must have length greater than or equal to 1"},
		{"union none", "CreateVirtualServiceInput", `{"meshName":"m","virtualServiceName":"s","spec":{"provider":{}}}`, "at 'spec.provider' failed to satisfy constraint: Member must have exactly one of [virtualNode, virtualRouter] set"},
		{"union two", "CreateVirtualServiceInput", `{"meshName":"m","virtualServiceName":"s","spec":{"provider":{"virtualNode":{"virtualNodeName":"a"},"virtualRouter":{"virtualRouterName":"b"}}}}`, "exactly one of"},
		{"unknown member ignored", "CreateMeshInput", `{"meshName":"m","bogus":1}`, ""},
		{"two errors", "CreateMeshInput", `{"meshName":"","spec":{"egressFilter":{"type":"NONE"}}}`, "2 validation errors detected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := m.Validate(c.shape, decode(t, c.doc))
			if c.want == "" {
				if len(vs) != 0 {
					t.Fatalf("unexpected violations: %s", vs[0].Error())
				}
				return
			}
			if len(vs) == 0 {
				t.Fatalf("no violation, want %q", c.want)
			}
			if msg := shape.Message(vs); !strings.Contains(msg, c.want) {
				t.Fatalf("message %q does not contain %q", msg, c.want)
			}
		})
	}
}

func TestValidDocumentsDecode(t *testing.T) {
	doc := `{"meshName":"m","virtualNodeName":"n","spec":{"backends":[],"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":0}}}}]}}`
	if vs := appmesh.Model().Validate("CreateVirtualNodeInput", decode(t, doc)); len(vs) > 0 {
		t.Fatal(vs)
	}
	var in appmesh.CreateVirtualNodeInput
	if err := json.Unmarshal([]byte(doc), &in); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(in)
	// Round trip keeps empty lists and zero values; member order is sorted.
	var a, b any
	json.Unmarshal([]byte(doc), &a)
	json.Unmarshal(out, &b)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("round trip changed the document:\n in %s\nout %s", ja, jb)
	}
}

func TestCloudMapPatterns(t *testing.T) {
	s := cloudmap.Model().Shapes
	cases := []struct {
		shape, value string
		ok           bool
	}{
		{"ServiceName", "red", true},
		{"ServiceName", "_http._tcp", true},
		{"ServiceName", ".", true},
		{"ServiceName", "-bad", false},
		{"ServiceName", strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 10), false},
		{"NamespaceNamePrivate", "colors.local", true},
		{"NamespaceNamePrivate", "arn:aws:x", false},
		{"InstanceId", "10.0.0.1", true},
		{"InstanceId", "bad id", false},
		{"AttrValue", "a b", true},
		{"AttrValue", " leading", false},
	}
	for _, c := range cases {
		if got := s[c.shape].Match(c.value); got != c.ok {
			t.Errorf("%s.Match(%q) = %v, want %v", c.shape, c.value, got, c.ok)
		}
	}
}

// TestPatternsCompile matches a value against every pattern of both
// models, so that none panics at its first use in a request.
func TestPatternsCompile(t *testing.T) {
	for _, m := range []*shape.Model{appmesh.Model(), cloudmap.Model()} {
		for name, s := range m.Shapes {
			if s.Pattern == "" {
				continue
			}
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Errorf("shape %s: pattern %q: %v", name, s.Pattern, p)
					}
				}()
				s.Match("a")
			}()
		}
	}
	long := cloudmap.Model().Shapes["NamespaceName"]
	if !long.Match(strings.Repeat("a", 1024)) || long.Match("") || long.Match("a b") {
		t.Error("NamespaceName pattern ^[!-~]{1,1024}$ does not match as Java would")
	}
}

// TestChecks: a model's check runs on each value of its shape the walk
// meets, wherever it is, with the value's path; not on a value of the wrong
// type, which the model's own rule refuses; and its violations join the
// model's in the message.
func TestChecks(t *testing.T) {
	type call struct {
		path string
		val  any
	}
	var calls []call
	m := &shape.Model{
		Shapes: map[string]*shape.Shape{
			"In":    {Name: "In", Kind: shape.Structure, Members: []shape.Member{{Name: "items", Shape: "Items"}, {Name: "n", Shape: "N"}}},
			"Items": {Name: "Items", Kind: shape.List, Elem: "Item"},
			"Item":  {Name: "Item", Kind: shape.Structure, Members: []shape.Member{{Name: "name", Shape: "Name"}}},
			"Name":  {Name: "Name", Kind: shape.String, Max: 3, HasMax: true},
			"N":     {Name: "N", Kind: shape.Long, Max: 9, HasMax: true},
		},
		Checks: map[string]shape.Check{
			"Item": func(path string, val any) []shape.Violation {
				calls = append(calls, call{path, val})
				if name, _ := val.(map[string]any)["name"].(string); name == "bad" || name == "worse" {
					return []shape.Violation{{Path: shape.MemberPath(path, "name"), Value: name, Rule: "Member must not be bad"}}
				}
				return nil
			},
			"N": func(path string, val any) []shape.Violation {
				calls = append(calls, call{path, val})
				return nil
			},
		},
	}
	vs := m.Validate("In", decode(t, `{"items":[{"name":"ok"},"not an item",{"name":"bad"},{"name":"worse"}],"n":10}`))
	want := "5 validation errors detected: " +
		"Value 'not an item' at 'items.2.member' failed to satisfy constraint: Member must be an object; " +
		"Value 'bad' at 'items.3.member.name' failed to satisfy constraint: Member must not be bad; " +
		"Value 'worse' at 'items.4.member.name' failed to satisfy constraint: Member must have length less than or equal to 3; " +
		"Value 'worse' at 'items.4.member.name' failed to satisfy constraint: Member must not be bad; " +
		"Value '10' at 'n' failed to satisfy constraint: Member must have value less than or equal to 9"
	if got := shape.Message(vs); got != want {
		t.Errorf("message\n %s, want\n %s", got, want)
	}
	var paths []string
	for _, c := range calls {
		paths = append(paths, c.path)
	}
	if got := strings.Join(paths, " "); got != "items.1.member items.3.member items.4.member n" {
		t.Errorf("checks called at %s", got)
	}
	calls = nil
	if vs := m.Validate("In", decode(t, `{"n":"9"}`)); len(vs) != 1 || len(calls) != 0 {
		t.Errorf("a value of the wrong type: %v, checks called %v", vs, calls)
	}
	// CheckRules reports the checks' violations alone.
	vs = m.CheckRules("In", decode(t, `{"items":[{"name":"ok"},"not an item",{"name":"bad"},{"name":"worse"}],"n":10}`))
	want = "2 validation errors detected: " +
		"Value 'bad' at 'items.3.member.name' failed to satisfy constraint: Member must not be bad; " +
		"Value 'worse' at 'items.4.member.name' failed to satisfy constraint: Member must not be bad"
	if got := shape.Message(vs); got != want {
		t.Errorf("CheckRules: message\n %s, want\n %s", got, want)
	}
}
