package cloudmap

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/store/bolt"
)

// checked validates in as a Go caller of the registry must, and calls op
// with it.
func checked[In, Out any](ctx context.Context, op func(context.Context, Valid[In]) (*Out, error), in *In) (*Out, error) {
	v, err := Check(in)
	if err != nil {
		return nil, err
	}
	return op(ctx, v)
}

// checkedErr is checked for an operation without output.
func checkedErr[In any](ctx context.Context, op func(context.Context, Valid[In]) error, in *In) error {
	v, err := Check(in)
	if err != nil {
		return err
	}
	return op(ctx, v)
}

func openRegistry(t *testing.T) (*Registry, *bolt.Store) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return NewRegistry(st, Config{}), st
}

// TestDecode: a request's body is refused as the API answers it (a body
// that is not one object, a violation of the model), and a valid one is
// decoded.
func TestDecode(t *testing.T) {
	tests := []struct {
		name, body string
		code, msg  string // want; "" code: valid
	}{
		{"valid", `{"ServiceId":"srv-1","InstanceId":"i-1","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"},"Unknown":1}`, "", ""},
		{"not JSON", `{"ServiceId":`, CodeSerializationException, "the request body is not valid JSON: unexpected EOF"},
		{"not an object", `[]`, CodeSerializationException, "the request body must be a JSON object"},
		{"data after", `{} 1`, CodeSerializationException, "the request body has data after its JSON object"},
		{"pattern", `{"ServiceId":"srv-1","InstanceId":"a b","Attributes":{}}`, CodeInvalidInput,
			`1 validation error detected: Value 'a b' at 'InstanceId' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[0-9a-zA-Z_/:.@-]+$`},
		{"missing and null", `{"ServiceId":null,"InstanceId":"i"}`, CodeInvalidInput,
			`2 validation errors detected: Value null at 'Attributes' failed to satisfy constraint: Member must not be null; Value null at 'ServiceId' failed to satisfy constraint: Member must not be null`},
		{"member in another case", `{"ServiceId":"s","InstanceId":"i","Attributes":{},"instanceId":"a b"}`, CodeInvalidInput,
			`1 validation error detected: Value null at 'instanceId' failed to satisfy constraint: Member is not in the model: member names are case-sensitive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Decode[RegisterInstanceRequest]([]byte(tt.body))
			if tt.code == "" {
				in, ierr := v.Input()
				if err != nil || ierr != nil || deref(in.InstanceId) != "i-1" || in.Attributes[AttrIPv4] != "10.0.0.1" {
					t.Fatalf("Decode = %+v, %v, %v", in, err, ierr)
				}
				return
			}
			e, ok := AsError(err)
			if !ok || e.Code != tt.code || e.Message != tt.msg {
				t.Fatalf("Decode: %v\nwant %s: %s", err, tt.code, tt.msg)
			}
			if _, err := v.Input(); !errors.Is(err, ErrNotValidated) {
				t.Errorf("the Valid of a refused body gave %v, want ErrNotValidated", err)
			}
		})
	}
}

// TestCheckRefusesWhatTheAPIRefuses: an input a Go caller built meets the
// model as a request does, with the API's error, and the registry stores
// nothing of it.
func TestCheckRefusesWhatTheAPIRefuses(t *testing.T) {
	ctx := context.Background()
	r, st := openRegistry(t)
	ns, err := checked(ctx, r.CreateHttpNamespace, &CreateHttpNamespaceRequest{Name: ptr("ns")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := checked(ctx, r.GetOperation, &GetOperationRequest{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr("s"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"])})
	if err != nil {
		t.Fatal(err)
	}
	rev := st.Revision()
	tests := []struct {
		name string
		call func() error
		want string // the violation's path and rule, as the API's message has it
	}{
		{"instance id", func() error {
			_, err := checked(ctx, r.RegisterInstance, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr("a b"), Attributes: map[string]string{}})
			return err
		}, "at 'InstanceId' failed to satisfy constraint: Member must satisfy regular expression pattern"},
		{"no attributes", func() error {
			_, err := checked(ctx, r.RegisterInstance, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr("i")})
			return err
		}, "Value null at 'Attributes' failed to satisfy constraint: Member must not be null"},
		{"attribute value", func() error {
			_, err := checked(ctx, r.RegisterInstance, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr("i"), Attributes: map[string]string{"k": strings.Repeat("v", 1025)}})
			return err
		}, "at 'Attributes.k' failed to satisfy constraint: Member must have length less than or equal to 1024"},
		{"public namespace name", func() error {
			_, err := checked(ctx, r.CreatePublicDnsNamespace, &CreatePublicDnsNamespaceRequest{Name: ptr("a_b.example.com")})
			return err
		}, "Value 'a_b.example.com' at 'Name' failed to satisfy constraint: Member must satisfy regular expression pattern"},
		{"service name", func() error {
			_, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr("a b"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"])})
			return err
		}, "Value 'a b' at 'Name' failed to satisfy constraint"},
		{"failure threshold", func() error {
			_, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr("t"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"]),
				HealthCheckCustomConfig: &HealthCheckCustomConfig{FailureThreshold: ptr(int64(11))}})
			return err
		}, "Value '11' at 'HealthCheckCustomConfig.FailureThreshold' failed to satisfy constraint: Member must have value less than or equal to 10"},
		{"health status", func() error {
			return checkedErr(ctx, r.UpdateInstanceCustomHealthStatus, &UpdateInstanceCustomHealthStatusRequest{ServiceId: svc.Service.Id, InstanceId: ptr("i"), Status: "SICK"})
		}, "Value 'SICK' at 'Status' failed to satisfy constraint: Member must satisfy enum value set"},
		{"empty tag key", func() error {
			_, err := checked(ctx, r.TagResource, &TagResourceRequest{ResourceARN: svc.Service.Arn, Tags: []Tag{{Key: ptr(""), Value: ptr("")}}})
			return err
		}, "at 'Tags.1.member.Key' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{"no service change", func() error { // dereferenced nil before
			_, err := checked(ctx, r.UpdateService, &UpdateServiceRequest{Id: svc.Service.Id})
			return err
		}, "Value null at 'Service' failed to satisfy constraint: Member must not be null"},
		{"no namespace change", func() error { // dereferenced nil before
			_, err := checked(ctx, r.UpdateHttpNamespace, &UpdateHttpNamespaceRequest{Id: ptr(op.Operation.Targets["NAMESPACE"])})
			return err
		}, "Value null at 'Namespace' failed to satisfy constraint: Member must not be null"},
		{"no service attributes", func() error {
			_, err := checked(ctx, r.UpdateServiceAttributes, &UpdateServiceAttributesRequest{ServiceId: svc.Service.Id, Attributes: map[string]string{}})
			return err
		}, "at 'Attributes' failed to satisfy constraint: Member must have length greater than or equal to 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if e, ok := AsError(err); !ok || e.Code != CodeInvalidInput || !strings.Contains(e.Message, tt.want) {
				t.Errorf("got %v, want InvalidInput with %q", err, tt.want)
			}
		})
	}
	if got := st.Revision(); got != rev {
		t.Errorf("refused inputs wrote: revision %d -> %d", rev, got)
	}
}

// TestCheckCopies: changing an input after Check changes nothing that
// was validated.
func TestCheckCopies(t *testing.T) {
	in := &RegisterInstanceRequest{ServiceId: ptr("srv-1"), InstanceId: ptr("i"), Attributes: map[string]string{"k": "v"}}
	v, err := Check(in)
	if err != nil {
		t.Fatal(err)
	}
	*in.InstanceId = "a b"
	in.Attributes["k"] = strings.Repeat("v", 2000)
	got, err := v.Input()
	if err != nil || deref(got.InstanceId) != "i" || got.Attributes["k"] != "v" {
		t.Errorf("after the input changed, the Valid holds instance %q with a %d-character attribute (%v)", deref(got.InstanceId), len(got.Attributes["k"]), err)
	}
}

// TestEveryOperationRefusesTheZeroValid: each operation of the registry
// takes a Valid, and refuses one that no validator made, writing
// nothing.
func TestEveryOperationRefusesTheZeroValid(t *testing.T) {
	r, st := openRegistry(t)
	rev := st.Revision()
	rt := reflect.TypeFor[*Registry]()
	ctxType, errType := reflect.TypeFor[context.Context](), reflect.TypeFor[error]()
	n := 0
	for i := range rt.NumMethod() {
		m := rt.Method(i)
		ft := m.Type // receiver first
		if _, ok := Model().Operations[m.Name]; !ok {
			continue
		}
		n++
		if ft.NumIn() != 3 || ft.In(1) != ctxType || !strings.HasPrefix(ft.In(2).Name(), "Valid[") {
			t.Errorf("%s%v: want (context.Context, Valid[...])", m.Name, ft)
			continue
		}
		out := m.Func.Call([]reflect.Value{reflect.ValueOf(r), reflect.ValueOf(context.Background()), reflect.Zero(ft.In(2))})
		errv := out[len(out)-1]
		if errv.Type() != errType || errv.IsNil() || !errors.Is(errv.Interface().(error), ErrNotValidated) {
			t.Errorf("%s with the zero Valid: %v, want ErrNotValidated", m.Name, errv)
		}
	}
	if n != len(Model().Operations) {
		t.Errorf("the registry has %d of the model's %d operations", n, len(Model().Operations))
	}
	if got := st.Revision(); got != rev {
		t.Errorf("the zero Valid wrote: revision %d -> %d", rev, got)
	}
}

// TestValidOnlyOfTheModel: a type that is not a structure of the Cloud
// Map model cannot be validated.
func TestValidOnlyOfTheModel(t *testing.T) {
	if _, err := Check(ptr(5)); err == nil {
		t.Error("Check[int] made a Valid")
	}
	if _, err := Decode[struct{ Name string }]([]byte(`{}`)); err == nil {
		t.Error("Decode of an anonymous struct made a Valid")
	}
	if _, err := Decode[HealthStatus]([]byte(`{}`)); err == nil {
		t.Error("Decode of an enum made a Valid")
	}
	if _, err := Check(&Namespace{}); err != nil {
		t.Errorf("Check of a structure of the model: %v", err)
	}
}
