package cloudmap

import (
	"net/url"
	"strings"
)

// Store layout. Namespaces, services and instances are one key each, whose
// value is the JSON of a record type below. Segments that users choose
// (instance ids, names) are path-escaped so a '/' cannot split a key.
//
//	cloudmap/namespace/<ns-id>                      NamespaceRecord
//	cloudmap/service/<srv-id>                       ServiceRecord
//	cloudmap/instance/<srv-id>/<instance-id>        InstanceRecord
//	cloudmap/index/nsname/<owner>/<name>            ns-id (namespace names are unique per account)
//	cloudmap/index/svcname/<ns-id>/<name>           srv-id (lower-cased in DNS namespaces)
//	cloudmap/operation/<op-id>                      Operation
//	cloudmap/token/<operation>/<request-id>         TokenRecord (CreatorRequestId idempotency)
//
// Readers (internal/discovery, and through it the DNS and xDS servers) watch
// KeyPrefix and use ParseKey; only the registry writes these keys.
const KeyPrefix = "cloudmap/"

// Key prefixes of each record kind.
const (
	NamespacePrefix = KeyPrefix + "namespace/"
	ServicePrefix   = KeyPrefix + "service/"
	InstancePrefix  = KeyPrefix + "instance/"
	OperationPrefix = KeyPrefix + "operation/"
	nsNamePrefix    = KeyPrefix + "index/nsname/"
	svcNamePrefix   = KeyPrefix + "index/svcname/"
	tokenPrefix     = KeyPrefix + "token/"
)

func esc(s string) string { return url.PathEscape(s) }

// NamespaceKey is the key of a namespace.
func NamespaceKey(nsID string) string { return NamespacePrefix + esc(nsID) }

// ServiceKey is the key of a service.
func ServiceKey(srvID string) string { return ServicePrefix + esc(srvID) }

// InstancesPrefix is the prefix of every instance of a service.
func InstancesPrefix(srvID string) string { return InstancePrefix + esc(srvID) + "/" }

// InstanceKey is the key of an instance.
func InstanceKey(srvID, instanceID string) string { return InstancesPrefix(srvID) + esc(instanceID) }

// OperationKey is the key of an operation.
func OperationKey(opID string) string { return OperationPrefix + esc(opID) }

// namespaceNamesPrefix is the prefix of the name index of an account's
// namespaces; counting it gives how many the account has.
func namespaceNamesPrefix(owner string) string { return nsNamePrefix + esc(owner) + "/" }

func namespaceNameKey(owner, name string) string { return namespaceNamesPrefix(owner) + esc(name) }

// serviceNamesPrefix is the prefix of the name index of a namespace's
// services; counting it gives the namespace's ServiceCount.
func serviceNamesPrefix(nsID string) string { return svcNamePrefix + esc(nsID) + "/" }

func serviceNameKey(nsID, name string) string { return serviceNamesPrefix(nsID) + esc(name) }

func tokenKey(op, requestID string) string { return tokenPrefix + esc(op) + "/" + esc(requestID) }

// KeyKind is the kind of record a key holds.
type KeyKind uint8

// Record kinds that readers follow.
const (
	KindNamespace KeyKind = iota + 1
	KindService
	KindInstance
)

// KeyRef identifies the record a key holds. ServiceID is set for services
// and instances, InstanceID for instances only.
type KeyRef struct {
	Kind        KeyKind
	NamespaceID string
	ServiceID   string
	InstanceID  string
}

// ParseKey returns the namespace, service or instance a key holds, or
// ok=false for any other key (indexes, operations, tokens, foreign keys).
func ParseKey(key string) (KeyRef, bool) {
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return KeyRef{}, false
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return KeyRef{}, false
		}
		parts[i] = u
	}
	switch {
	case len(parts) == 2 && parts[0] == "namespace":
		return KeyRef{Kind: KindNamespace, NamespaceID: parts[1]}, true
	case len(parts) == 2 && parts[0] == "service":
		return KeyRef{Kind: KindService, ServiceID: parts[1]}, true
	case len(parts) == 3 && parts[0] == "instance":
		return KeyRef{Kind: KindInstance, ServiceID: parts[1], InstanceID: parts[2]}, true
	}
	return KeyRef{}, false
}
