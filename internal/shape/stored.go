package shape

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// Doc decodes b, one JSON value and nothing after it, as Validate takes
// documents (numbers as json.Number).
func Doc(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var doc any
	if err := d.Decode(&doc); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return doc, nil
}

// DecodeStrict decodes b, one JSON value and nothing after it, into v,
// refusing members v's type does not have. It is for values weft wrote
// itself from v's type (its stored records), which hold none; a request
// may hold members the model does not know, which AWS ignores, and so
// does Validate.
func DecodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// DecodeStored decodes b, a value weft stored from the Go type of the
// named shape, into v: b must satisfy the model as a request would
// (Validate: constraints and Checks) and hold nothing v's type lacks
// (DecodeStrict). The error says what is wrong, as Message does.
func (m *Model) DecodeStored(shapeName string, b []byte, v any) error {
	doc, err := Doc(b)
	if err != nil {
		return err
	}
	if vs := m.Validate(shapeName, doc); len(vs) > 0 {
		return errors.New(Message(vs))
	}
	return DecodeStrict(b, v)
}
