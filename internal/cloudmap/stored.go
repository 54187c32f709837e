package cloudmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/weftmesh/weft/internal/store"
)

// CheckRecord checks one key under KeyPrefix and its value as a restore
// must before writing them (weft restore, weft store copy). It refuses
// what the registry and its readers (internal/discovery) cannot read,
// and nothing more: a key the registry never writes, or spells
// otherwise (cloudmap/remote/ belongs to internal/discovery); a value
// that does not decode, with encoding/json as every reader of it does,
// as the record its key names (members its type lacks are ignored, as
// the readers ignore them); a namespace, service, instance or operation
// whose id is not its key's; and a request id expiry that names no
// request id key (pruning deletes the key it names). The model's
// constraints are not checked: the readers do not check them either, so
// a record written before a rule was tightened, or by a newer weft, is
// read as it is. It reads nothing else, so a record's parent (a
// service's namespace, an instance's service) is not checked.
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
		parts, ok := store.KeySegments(rest, 2)
		if !ok || (prefix == nsNamePrefix && namespaceNameKey(parts[0], parts[1]) != key) || (prefix == svcNamePrefix && serviceNameKey(parts[0], parts[1]) != key) {
			return errors.New("not a name index key")
		}
		return nil // an id; one that names nothing is not found
	case OperationPrefix:
		parts, ok := store.KeySegments(rest, 1)
		if !ok || OperationKey(parts[0]) != key {
			return errors.New("not an operation key")
		}
		var op Operation
		if err := json.Unmarshal(value, &op); err != nil {
			return fmt.Errorf("not a valid operation: %w", err)
		}
		return sameID("Id", op.Id, parts[0])
	case tokenPrefix:
		parts, ok := store.KeySegments(rest, 2)
		if !ok || tokenKey(parts[0], parts[1]) != key {
			return errors.New("not a request id key")
		}
		var tok TokenRecord
		if err := json.Unmarshal(value, &tok); err != nil {
			return fmt.Errorf("not a request id record: %w", err)
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
		if err := json.Unmarshal(value, &rec); err != nil {
			return fmt.Errorf("not a valid namespace: %w", err)
		}
		return sameID("Namespace.Id", rec.Namespace.Id, ref.NamespaceID)
	case KindService:
		if ServiceKey(ref.ServiceID) != key {
			return errors.New("not the key of a service")
		}
		var rec ServiceRecord
		if err := json.Unmarshal(value, &rec); err != nil {
			return fmt.Errorf("not a valid service: %w", err)
		}
		return sameID("Service.Id", rec.Service.Id, ref.ServiceID)
	case KindInstance:
		if InstanceKey(ref.ServiceID, ref.InstanceID) != key {
			return errors.New("not the key of an instance")
		}
		var rec InstanceRecord
		if err := json.Unmarshal(value, &rec); err != nil {
			return fmt.Errorf("not a valid instance: %w", err)
		}
		return sameID("Instance.Id", rec.Instance.Id, ref.InstanceID)
	}
	return errors.New("not a record kind")
}

func sameID(member string, got *string, want string) error {
	if deref(got) != want {
		return fmt.Errorf("%s is %q, not %q as its key says", member, deref(got), want)
	}
	return nil
}
