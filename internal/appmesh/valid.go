package appmesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/weftmesh/weft/internal/shape"
)

// Valid is an operation's input that satisfies the model: its shape's
// types and constraints, and App Mesh's rules that the model leaves out
// (the model's Checks). Only Decode and Check make one, each with one walk
// of the model, and the write operations (internal/appmesh/ops) take a
// Valid, not the input itself.
//
// Why a type rather than a walk in each layer: the API must validate the
// document it decoded from the request, since what is wrong with a request
// (a number where a name goes, a null, a member's name in another case) is
// lost once it is decoded into the Go type, while a Go caller has only the
// Go type. Both meet the same rules, here and once; the operations'
// signatures say that they did, so no caller can skip the walk by
// accident and no operation needs to walk again. (Cloud Map's registry
// takes a cloudmap.Valid in the same way.) The zero Valid holds no input,
// and Input refuses it.
type Valid[In any] struct {
	in *In // never shared with the caller that validated it
}

// ErrNotValidated is what Input returns for the zero Valid, which no
// validator made: a bug in the caller, never the client's mistake.
var ErrNotValidated = errors.New("the input was not validated against the App Mesh model")

// Input returns the validated input. The caller must not modify it: what
// it holds is what was validated.
func (v Valid[In]) Input() (*In, error) {
	if v.in == nil {
		return nil, ErrNotValidated
	}
	return v.in, nil
}

// Decode validates doc against In's shape and decodes it into In. doc is
// a request as encoding/json decodes it with UseNumber, with the members
// that travel in the path, query string and headers added. A violation is
// a BadRequestException with AWS's message.
func Decode[In any](doc map[string]any) (Valid[In], error) {
	name, err := shapeOf[In]()
	if err != nil {
		return Valid[In]{}, err
	}
	if vs := Model().Validate(name, doc); len(vs) > 0 {
		return Valid[In]{}, BadRequest("%s", shape.Message(vs))
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return Valid[In]{}, fmt.Errorf("encode %s: %w", name, err)
	}
	in := new(In)
	if err := json.Unmarshal(b, in); err != nil {
		// Validate promises that a valid document decodes; kept as the
		// client's error should the two ever disagree.
		return Valid[In]{}, BadRequest("The request could not be read: %v", err)
	}
	return Valid[In]{in: in}, nil
}

// Check validates an input that a Go caller built, as Decode validates a
// request: it is encoded, decoded as a request body is and given to
// Decode. The Valid holds its own copy, so that changing in afterwards
// changes nothing that was validated.
func Check[In any](in *In) (Valid[In], error) {
	name, err := shapeOf[In]()
	if err != nil {
		return Valid[In]{}, err
	}
	b, err := json.Marshal(in)
	if err != nil {
		return Valid[In]{}, fmt.Errorf("encode %s: %w", name, err)
	}
	doc, err := shape.DecodeObject(b)
	if err != nil {
		return Valid[In]{}, fmt.Errorf("decode %s: %w", name, err)
	}
	return Decode[In](doc)
}

// shapeOf returns the name of In's shape. The generated types are named
// after their shapes; any other type has no shape to be validated against
// and is refused, so that Valid[int] cannot be made.
func shapeOf[In any]() (string, error) {
	t := reflect.TypeFor[In]()
	if name, ok := Model().StructureOf(t, reflect.TypeFor[Error]().PkgPath()); ok {
		return name, nil
	}
	return "", fmt.Errorf("%v is not a structure of the App Mesh model", t)
}
