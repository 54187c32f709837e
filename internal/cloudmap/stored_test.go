package cloudmap

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// TestCheckRecord: every key the registry writes passes the check a
// restore makes; the same keys spelt otherwise, and values the registry
// never writes there, are refused.
func TestCheckRecord(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := NewRegistry(st, Config{})
	ns, err := r.CreatePrivateDnsNamespace(ctx, &CreatePrivateDnsNamespaceRequest{Name: ptr("a.local"), Vpc: ptr("vpc-1"), CreatorRequestId: ptr("req 1/2")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := r.GetOperation(ctx, &GetOperationRequest{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := r.CreateService(ctx, &CreateServiceRequest{Name: ptr("b"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"]),
		DnsConfig: &DnsConfig{DnsRecords: []DnsRecord{{Type: RecordTypeA, TTL: ptr(int64(10))}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.RegisterInstance(ctx, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr("i/1"),
		Attributes: map[string]string{AttrIPv4: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	written := map[string][]byte{}
	_, err = st.View(ctx, func(tx store.Tx) error {
		kvs, err := tx.List(KeyPrefix, "", 0)
		for _, kv := range kvs {
			written[kv.Key] = kv.Value
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	byPrefix := map[string]string{}
	for key, val := range written {
		if err := CheckRecord(key, val); err != nil {
			t.Errorf("%s, as the registry wrote it: %v", key, err)
		}
		for _, p := range []string{NamespacePrefix, ServicePrefix, InstancePrefix, OperationPrefix, nsNamePrefix, svcNamePrefix, tokenPrefix, expiryPrefix} {
			if strings.HasPrefix(key, p) {
				byPrefix[p] = key
			}
		}
	}
	if len(byPrefix) != 8 {
		t.Fatalf("the registry wrote keys of %d kinds, want 8: %v", len(byPrefix), byPrefix)
	}

	instKey := byPrefix[InstancePrefix]
	for _, tc := range []struct{ key, value, want string }{
		{strings.Replace(instKey, "%2F", "%2f", 1), string(written[instKey]), "not the key of an instance"},
		{instKey, `{"Instance":{"Id":"i/1"},"Health":"SICK"}`, "Member must satisfy enum value set"},
		{instKey, `{"Instance":{"Id":"i/1"}}`, "no health"},
		{byPrefix[ServicePrefix], `{"Service":{"Id":"x","Name":"b","NamespaceId":"ns"}}`, `Service.Id is "x"`},
		{byPrefix[NamespacePrefix], `{"Namespace":{"Name":"a.local"}}`, "no name or type"},
		{byPrefix[OperationPrefix], `{"Id":"x"}`, `Id is "x"`},
		{byPrefix[nsNamePrefix], "", "not the id"},
		{byPrefix[tokenPrefix], `{"At":1,"Hash":"h"}`, "result missing"},
		{byPrefix[expiryPrefix], NamespacePrefix + "x", "not the key of a request id"},
		{expiryPrefix + "x", tokenPrefix + "x", "not a request id expiry key"},
		{KeyPrefix + "remote/a/b", `{}`, "not a key weft's Cloud Map writes"},
	} {
		err := CheckRecord(tc.key, []byte(tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s = %q: %v; want an error saying %q", tc.key, tc.value, err, tc.want)
		}
	}
}
