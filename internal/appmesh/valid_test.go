package appmesh

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/shape"
)

// TestDecode: a request document is refused with the model's message, as
// Validate words it, or decoded into the input's Go type.
func TestDecode(t *testing.T) {
	cases := []struct {
		name, doc string
		want      string // the message; "" when valid
	}{
		{"valid", `{"meshName":"m","spec":{"egressFilter":{"type":"ALLOW_ALL"}},"clientToken":"t","unknown":1}`, ""},
		{"number for a name", `{"meshName":5}`, "1 validation error detected: Value '5' at 'meshName' failed to satisfy constraint: Member must be a string"},
		{"name in another case", `{"meshName":"m","MeshName":"n"}`, "1 validation error detected: Value null at 'MeshName' failed to satisfy constraint: Member is not in the model: member names are case-sensitive"},
		{"missing", `{}`, "1 validation error detected: Value null at 'meshName' failed to satisfy constraint: Member must not be null"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := decodeDoc(t, c.doc)
			v, err := Decode[CreateMeshInput](doc)
			if c.want != "" {
				if vs := Model().Validate("CreateMeshInput", doc); shape.Message(vs) != c.want {
					t.Fatalf("the case expects %q, Validate says %q", c.want, shape.Message(vs))
				}
				if e, ok := AsError(err); !ok || e.Code != CodeBadRequest || e.Message != c.want {
					t.Fatalf("%v, want a BadRequestException %q", err, c.want)
				}
				return
			}
			in, err := v.Input()
			if err != nil {
				t.Fatal(err)
			}
			if *in.MeshName != "m" || *in.ClientToken != "t" || in.Spec.EgressFilter.Type != EgressFilterTypeAllowAll {
				t.Fatalf("decoded %+v", in)
			}
		})
	}
}

// TestCheck: a Go caller's input meets the same rules as a request, and
// what was validated is a copy that the caller's later changes leave
// alone.
func TestCheck(t *testing.T) {
	name := "m"
	in := &CreateMeshInput{MeshName: &name}
	v, err := Check(in)
	if err != nil {
		t.Fatal(err)
	}
	name = "no/slash"
	in.MeshName = nil
	got, _ := v.Input()
	if got == in || *got.MeshName != "m" {
		t.Fatalf("the validated input follows the caller's changes: %+v", got)
	}
	if _, err := Check(in); err == nil {
		t.Fatal("an input without its required name passed")
	}
	if _, err := Check[CreateMeshInput](nil); err == nil {
		t.Fatal("a nil input passed")
	}
}

// TestValidOnlyOfTheModel: the zero Valid holds nothing, and a type that
// is not a structure of the model cannot be validated into one.
func TestValidOnlyOfTheModel(t *testing.T) {
	if _, err := (Valid[CreateMeshInput]{}).Input(); !errors.Is(err, ErrNotValidated) {
		t.Errorf("zero Valid: %v, want ErrNotValidated", err)
	}
	if _, err := Check(&shape.Violation{}); err == nil {
		t.Error("another package's structure was validated")
	}
	if _, err := Decode[int](map[string]any{}); err == nil {
		t.Error("Decode[int] made a Valid")
	}
	if _, err := Decode[MeshStatusCode](map[string]any{}); err == nil {
		t.Error("a shape that is not a structure was validated")
	}
}

func decodeDoc(t *testing.T, s string) map[string]any {
	t.Helper()
	var doc map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}
