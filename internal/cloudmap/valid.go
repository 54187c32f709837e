package cloudmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/weftmesh/weft/internal/shape"
)

// Valid is an operation's input that satisfies the Cloud Map model: its
// shape's types and constraints. Only Decode (a request's body) and Check
// (an input a Go caller built) make one, each with one walk of the model,
// and the Registry's operations take a Valid, not the input itself, so
// that no caller can skip the walk and none of them walks again.
//
// What the model leaves out, the registry checks where it has what the
// rule needs, once: the rules on the stored resources (a DNS service's
// records, an instance's attributes against its service) and the quotas
// (50 tags, 30 service attributes, the custom attributes of an instance),
// and the rules that only weft has (a private DNS namespace's name is a
// domain name). A Valid promises nothing about those.
//
// The zero Valid holds no input, and Input refuses it.
type Valid[In any] struct {
	in *In // never shared with the caller that validated it
}

// ErrNotValidated is what Input returns for the zero Valid, which no
// validator made: a bug in the caller, never the client's mistake.
var ErrNotValidated = errors.New("the input was not validated against the Cloud Map model")

// Input returns the validated input. The caller must not modify it: what
// it holds is what was validated.
func (v Valid[In]) Input() (*In, error) {
	if v.in == nil {
		return nil, ErrNotValidated
	}
	return v.in, nil
}

// Decode validates body, a request's JSON document (awsJson1.1: the whole
// input), against In's shape and decodes it into In. A body that is not
// one JSON object is a SerializationException, a violation of the model
// an InvalidInput with AWS's message.
func Decode[In any](body []byte) (Valid[In], error) {
	name, err := shapeOf[In]()
	if err != nil {
		return Valid[In]{}, err
	}
	doc, err := shape.DecodeObject(body)
	if err != nil {
		return Valid[In]{}, &Error{Code: CodeSerializationException, Message: err.Error()}
	}
	if vs := Model().Validate(name, doc); len(vs) > 0 {
		return Valid[In]{}, &Error{Code: CodeInvalidInput, Message: shape.Message(vs)}
	}
	in := new(In)
	if err := json.Unmarshal(body, in); err != nil {
		// Validate promises that a valid document decodes; kept as the
		// client's error should the two ever disagree.
		return Valid[In]{}, &Error{Code: CodeSerializationException, Message: err.Error()}
	}
	return Valid[In]{in: in}, nil
}

// Check validates an input that a Go caller built, as Decode validates a
// request: it is encoded and given to Decode, and its errors are Decode's.
// The Valid holds its own copy, so that changing in afterwards changes
// nothing that was validated.
func Check[In any](in *In) (Valid[In], error) {
	name, err := shapeOf[In]()
	if err != nil {
		return Valid[In]{}, err
	}
	b, err := json.Marshal(in)
	if err != nil {
		return Valid[In]{}, fmt.Errorf("encode %s: %w", name, err)
	}
	return Decode[In](b)
}

// shapeOf returns the name of In's shape. The generated types are named
// after their shapes; any other type has no shape to be validated against
// and is refused, so that Valid[int] cannot be made.
func shapeOf[In any]() (string, error) {
	t := reflect.TypeFor[In]()
	if name, ok := Model().StructureOf(t, reflect.TypeFor[Error]().PkgPath()); ok {
		return name, nil
	}
	return "", fmt.Errorf("%v is not a structure of the Cloud Map model", t)
}
