package cloudmap

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/shape"
)

// CheckRecord checks one key under KeyPrefix and its value as a restore
// must before writing them (weft restore, weft store copy): a record of
// keys.go, under the key the registry would write it at, whose value
// decodes as that record without members its type lacks, and whose
// parts the model accepts as the API does (Model().Validate). Any other
// key is one the registry never writes (cloudmap/remote/ belongs to
// internal/discovery). It reads nothing else, so a record's parent
// (a service's namespace, an instance's service) is not checked.
func CheckRecord(key string, value []byte) error {
	if ref, ok := ParseKey(key); ok {
		return checkRecord(ref, key, value)
	}
	rest, prefix := "", ""
	for _, p := range []string{nsNamePrefix, svcNamePrefix, OperationPrefix, tokenPrefix, expiryPrefix} {
		if r, ok := strings.CutPrefix(key, p); ok {
			rest, prefix = r, p
			break
		}
	}
	switch prefix {
	case nsNamePrefix, svcNamePrefix:
		parts, ok := segments(rest, 2)
		if !ok || (prefix == nsNamePrefix && namespaceNameKey(parts[0], parts[1]) != key) || (prefix == svcNamePrefix && serviceNameKey(parts[0], parts[1]) != key) {
			return errors.New("not a name index key")
		}
		if len(value) == 0 || strings.Contains(string(value), "/") {
			return fmt.Errorf("holds %q, not the id of what the name names", value)
		}
		return nil
	case OperationPrefix:
		parts, ok := segments(rest, 1)
		if !ok || OperationKey(parts[0]) != key {
			return errors.New("not an operation key")
		}
		var op Operation
		if err := Model().DecodeStored("Operation", value, &op); err != nil {
			return fmt.Errorf("not a valid operation: %w", err)
		}
		return sameID("Id", op.Id, parts[0])
	case tokenPrefix:
		parts, ok := segments(rest, 2)
		if !ok || tokenKey(parts[0], parts[1]) != key {
			return errors.New("not a request id key")
		}
		var tok TokenRecord
		if err := shape.DecodeStrict(value, &tok); err != nil {
			return fmt.Errorf("not a request id record: %w", err)
		}
		if tok.At <= 0 || tok.Hash == "" || len(tok.Result) == 0 {
			return errors.New("not a request id record: time, hash or result missing")
		}
		return nil
	case expiryPrefix:
		if _, ok := sortableTime(rest); !ok || len(rest) != 41 || strings.Contains(rest, "/") {
			return errors.New("not a request id expiry key")
		}
		if !strings.HasPrefix(string(value), tokenPrefix) {
			return fmt.Errorf("holds %q, not the key of a request id", value)
		}
		return nil
	}
	return errors.New("not a key weft's Cloud Map writes")
}

// checkRecord checks a namespace, service or instance record.
func checkRecord(ref KeyRef, key string, value []byte) error {
	switch ref.Kind {
	case KindNamespace:
		if NamespaceKey(ref.NamespaceID) != key {
			return errors.New("not the key of a namespace")
		}
		var rec NamespaceRecord
		if err := decodeRecord(value, &rec, map[string]string{"Namespace": "Namespace", "Tags": "TagList"}); err != nil {
			return fmt.Errorf("not a valid namespace: %w", err)
		}
		if rec.Namespace.Type == "" || deref(rec.Namespace.Name) == "" {
			return errors.New("not a valid namespace: no name or type")
		}
		return sameID("Namespace.Id", rec.Namespace.Id, ref.NamespaceID)
	case KindService:
		if ServiceKey(ref.ServiceID) != key {
			return errors.New("not the key of a service")
		}
		var rec ServiceRecord
		if err := decodeRecord(value, &rec, map[string]string{"Service": "Service", "Attributes": "ServiceAttributesMap", "Tags": "TagList"}); err != nil {
			return fmt.Errorf("not a valid service: %w", err)
		}
		if deref(rec.Service.Name) == "" || deref(rec.Service.NamespaceId) == "" {
			return errors.New("not a valid service: no name or namespace")
		}
		return sameID("Service.Id", rec.Service.Id, ref.ServiceID)
	case KindInstance:
		if InstanceKey(ref.ServiceID, ref.InstanceID) != key {
			return errors.New("not the key of an instance")
		}
		var rec InstanceRecord
		if err := decodeRecord(value, &rec, map[string]string{"Instance": "Instance", "Health": "HealthStatus"}); err != nil {
			return fmt.Errorf("not a valid instance: %w", err)
		}
		if rec.Health == "" {
			return errors.New("not a valid instance: no health")
		}
		return sameID("Instance.Id", rec.Instance.Id, ref.InstanceID)
	}
	return errors.New("not a record kind")
}

// decodeRecord decodes value into rec, a record type of records.go,
// refusing members rec lacks, after checking the members that hold a
// shape of the model against it as the API checks requests, but for
// required members: the records hold output shapes (ValidateOutput).
func decodeRecord(value []byte, rec any, members map[string]string) error {
	doc, err := shape.Doc(value)
	if err != nil {
		return err
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return errors.New("not a JSON object")
	}
	var vs []shape.Violation
	for _, name := range slices.Sorted(maps.Keys(members)) {
		for _, v := range Model().ValidateOutput(members[name], obj[name]) {
			v.Path = shape.MemberPath(name, v.Path)
			vs = append(vs, v)
		}
	}
	if len(vs) > 0 {
		return errors.New(shape.Message(vs))
	}
	return shape.DecodeStrict(value, rec)
}

func sameID(member string, got *string, want string) error {
	if deref(got) != want {
		return fmt.Errorf("%s is %q, not %q as its key says", member, deref(got), want)
	}
	return nil
}

// segments splits s into n path-escaped segments and unescapes them.
func segments(s string, n int) ([]string, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != n {
		return nil, false
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}
