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
// restore makes, and so do values it never writes but reads all the
// same; the same keys spelt otherwise, and values the registry cannot
// read, are refused.
func TestCheckRecord(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := NewRegistry(st, Config{})
	ns, err := checked(ctx, r.CreatePrivateDnsNamespace, &CreatePrivateDnsNamespaceRequest{Name: ptr("a.local"), Vpc: ptr("vpc-1"), CreatorRequestId: ptr("req 1/2")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := checked(ctx, r.GetOperation, &GetOperationRequest{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr("b"), NamespaceId: ptr(op.Operation.Targets["NAMESPACE"]),
		DnsConfig: &DnsConfig{DnsRecords: []DnsRecord{{Type: RecordTypeA, TTL: ptr(int64(10))}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checked(ctx, r.RegisterInstance, &RegisterInstanceRequest{ServiceId: svc.Service.Id, InstanceId: ptr("i/1"),
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

	instKey, svcKey, nsKey := byPrefix[InstancePrefix], byPrefix[ServicePrefix], byPrefix[NamespacePrefix]
	svcID, nsID := strings.TrimPrefix(svcKey, ServicePrefix), strings.TrimPrefix(nsKey, NamespacePrefix)
	for _, tc := range []struct{ key, value string }{
		{instKey, `{"Instance":{"Id":"i/1"},"Health":"SICK"}`},
		{instKey, `{"Instance":{"Id":"i/1"}}`},
		{svcKey, `{"Service":{"Id":"` + svcID + `","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":-1}]}},"Attributes":{}}`},
		{nsKey, `{"Namespace":{"Id":"` + nsID + `","Name":"a.local","ResourceOwner":"1"},"Colour":"blue"}`},
		{byPrefix[nsNamePrefix], ""},
		{byPrefix[tokenPrefix], `{"At":1,"Hash":"h"}`},
	} {
		if err := CheckRecord(tc.key, []byte(tc.value)); err != nil {
			t.Errorf("%s = %s, which the registry reads: %v", tc.key, tc.value, err)
		}
	}
	for _, tc := range []struct{ key, value, want string }{
		{strings.Replace(instKey, "%2F", "%2f", 1), string(written[instKey]), "not the key of an instance"},
		{instKey, `{"Instance":{"Id":"i/1","Attributes":["x"]}}`, "cannot unmarshal array"},
		{instKey, `{"Instance":`, "not a valid instance"},
		{svcKey, `{"Service":{"Id":"x","Name":"b","NamespaceId":"ns"}}`, `Service.Id is "x"`},
		{svcKey, `{"Service":{"Id":"` + svcID + `"}} {}`, "not a valid service"},
		{nsKey, `{"Namespace":{"Name":"a.local"}}`, `Namespace.Id is ""`},
		{byPrefix[OperationPrefix], `{"Id":"x"}`, `Id is "x"`},
		{byPrefix[tokenPrefix], `{"At":"now"}`, "not a request id record"},
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

// TestRegistryReadsWhatRestoreTakes: a DNS namespace stored without
// properties, which CheckRecord takes although the registry writes none
// such, is updated (it panicked); and a service whose last attribute is
// deleted is stored without attributes, as one that never had any, not
// with an empty map, which the model's ServiceAttributesMap (1 to 30)
// does not hold.
func TestRegistryReadsWhatRestoreTakes(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := NewRegistry(st, Config{})
	nsKey := NamespaceKey("ns-bare")
	bare := `{"Namespace":{"Id":"ns-bare","Name":"bare.local","Type":"DNS_PRIVATE"}}`
	if err := CheckRecord(nsKey, []byte(bare)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.Put(nsKey, []byte(bare)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := checked(ctx, r.UpdatePrivateDnsNamespace, &UpdatePrivateDnsNamespaceRequest{Id: ptr("ns-bare"), Namespace: &PrivateDnsNamespaceChange{
		Properties: &PrivateDnsNamespacePropertiesChange{DnsProperties: &PrivateDnsPropertiesMutableChange{SOA: &SOAChange{TTL: ptr(int64(30))}}}}}); err != nil {
		t.Errorf("update the SOA of a namespace stored without properties: %v", err)
	}
	got, err := checked(ctx, r.GetNamespace, &GetNamespaceRequest{Id: ptr("ns-bare")})
	if err != nil || got.Namespace.Properties == nil || got.Namespace.Properties.DnsProperties == nil || got.Namespace.Properties.DnsProperties.SOA == nil ||
		deref64(got.Namespace.Properties.DnsProperties.SOA.TTL) != 30 {
		t.Errorf("namespace after the update: %+v, %v", got, err)
	}

	svc, err := checked(ctx, r.CreateService, &CreateServiceRequest{Name: ptr("b"), NamespaceId: ptr("ns-bare"),
		DnsConfig: &DnsConfig{DnsRecords: []DnsRecord{{Type: RecordTypeA, TTL: ptr(int64(10))}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checked(ctx, r.UpdateServiceAttributes, &UpdateServiceAttributesRequest{ServiceId: svc.Service.Id, Attributes: map[string]string{"tier": "web"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := checked(ctx, r.DeleteServiceAttributes, &DeleteServiceAttributesRequest{ServiceId: svc.Service.Id, Attributes: []string{"tier"}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.View(ctx, func(tx store.Tx) error {
		kv, _, err := tx.Get(ServiceKey(*svc.Service.Id))
		if err == nil && strings.Contains(string(kv.Value), `"Attributes"`) {
			t.Errorf("a service without attributes is stored with them: %s", kv.Value)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := checked(ctx, r.GetServiceAttributes, &GetServiceAttributesRequest{ServiceId: svc.Service.Id})
	if err != nil || len(attrs.ServiceAttributes.Attributes) != 0 {
		t.Errorf("attributes after the last was deleted: %+v, %v", attrs, err)
	}
}

func deref64(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}
