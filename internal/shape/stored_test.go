package shape_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/shape"
)

// TestStored: a stored value is held to the model as a request is, and
// beyond it to its Go type: one JSON value, no member the type lacks.
// An output shape may leave out required members.
func TestStored(t *testing.T) {
	type item struct {
		Name *string `json:"name"`
	}
	m := &shape.Model{Shapes: map[string]*shape.Shape{
		"Item": {Name: "Item", Kind: shape.Structure, Members: []shape.Member{{Name: "name", Shape: "Name", Required: true}}},
		"Name": {Name: "Name", Kind: shape.String, Max: 3, HasMax: true},
	}}
	for _, tc := range []struct{ doc, want string }{
		{`{"name":"ok"}`, ""},
		{`{"name":"long"}`, "Member must have length less than or equal to 3"},
		{`{}`, "Member must not be null"},
		{`{"name":"ok","more":1}`, `unknown field "more"`},
		{`{"name":"ok"} {}`, "data after the JSON value"},
		{`{"name":`, "unexpected EOF"},
	} {
		var it item
		err := m.DecodeStored("Item", []byte(tc.doc), &it)
		if tc.want == "" && (err != nil || it.Name == nil || *it.Name != "ok") {
			t.Errorf("%s: %v, decoded %+v", tc.doc, err, it)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v; want an error saying %q", tc.doc, err, tc.want)
		}
	}
	if vs := m.ValidateOutput("Item", decode(t, `{}`)); len(vs) != 0 {
		t.Errorf("an output without a required member: %v", vs)
	}
	if vs := m.ValidateOutput("Item", decode(t, `{"name":5}`)); len(vs) != 1 {
		t.Errorf("an output with a member of the wrong type: %v", vs)
	}
}
