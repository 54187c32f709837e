package cloudmapapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"

	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/cloudmap"
)

// overQuota fails unless call is refused with ResourceLimitExceeded, HTTP
// 400, and writes nothing.
func overQuota(t *testing.T, ts *testServer, call func() error) {
	t.Helper()
	rev := ts.st.Revision()
	err := call()
	var rle *types.ResourceLimitExceeded
	if !errors.As(err, &rle) || rle.ErrorMessage() == "" {
		t.Fatalf("error %v; want ResourceLimitExceeded with a message", err)
	}
	wantCode(t, err, "ResourceLimitExceeded")
	if got := ts.st.Revision(); got != rev {
		t.Errorf("a request over the quota wrote: revision %d -> %d", rev, got)
	}
}

func httpNamespace(t *testing.T, c *sdk.Client, name string) string {
	t.Helper()
	out := must(c.CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: aws.String(name)}))(t)
	return must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: out.OperationId}))(t).Operation.Targets["NAMESPACE"]
}

func namespaceCount(t *testing.T, c *sdk.Client) int {
	t.Helper()
	return len(must(c.ListNamespaces(ctx, &sdk.ListNamespacesInput{}))(t).Namespaces)
}

// TestQuotaNamespaces: the account's namespaces up to the quota are
// created, one more of any type is refused at once (no operation to
// poll) and changes nothing, a retry of an earlier create is still
// answered, and deleting one makes room.
func TestQuotaNamespaces(t *testing.T) {
	ts := newServerWith(t, filepath.Join(t.TempDir(), "weft.db"), &cloudmap.Limits{Namespaces: 2})
	c := ts.client(nil)
	first := &sdk.CreateHttpNamespaceInput{Name: aws.String("a"), CreatorRequestId: aws.String("create-a")}
	firstOut := must(c.CreateHttpNamespace(ctx, first))(t)
	aID := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: firstOut.OperationId}))(t).Operation.Targets["NAMESPACE"]
	createNamespace(t, c, "b.local") // the second: at the quota

	overQuota(t, ts, func() error {
		_, err := c.CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: aws.String("c")})
		return err
	})
	overQuota(t, ts, func() error {
		_, err := c.CreatePrivateDnsNamespace(ctx, &sdk.CreatePrivateDnsNamespaceInput{Name: aws.String("c.local"), Vpc: aws.String("vpc-1")})
		return err
	})
	overQuota(t, ts, func() error {
		_, err := c.CreatePublicDnsNamespace(ctx, &sdk.CreatePublicDnsNamespaceInput{Name: aws.String("c.example.com")})
		return err
	})
	if n := namespaceCount(t, c); n != 2 {
		t.Fatalf("%d namespaces after the refused creates, want 2", n)
	}
	// A retry of a create that succeeded creates nothing: it is answered.
	if again, err := c.CreateHttpNamespace(ctx, first); err != nil || aws.ToString(again.OperationId) != aws.ToString(firstOut.OperationId) {
		t.Errorf("retry of the first create at the quota: %v, operation %s; want operation %s", err, aws.ToString(again.OperationId), aws.ToString(firstOut.OperationId))
	}

	must(c.DeleteNamespace(ctx, &sdk.DeleteNamespaceInput{Id: aws.String(aID)}))(t)
	httpNamespace(t, c, "c")
	if n := namespaceCount(t, c); n != 2 {
		t.Errorf("%d namespaces, want 2", n)
	}
}

// TestQuotaBody: the refusal is awsJson1.1's error, as AWS sends it.
func TestQuotaBody(t *testing.T) {
	ts := newServerWith(t, filepath.Join(t.TempDir(), "weft.db"), &cloudmap.Limits{Namespaces: 1})
	httpNamespace(t, ts.client(nil), "a")
	rev := ts.st.Revision()
	req, err := http.NewRequest("POST", ts.URL+"/", strings.NewReader(`{"Name": "b"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", cloudmapapi.TargetPrefix+"CreateHttpNamespace")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	msg, _ := body["Message"].(string)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("x-amzn-ErrorType") != "ResourceLimitExceeded" ||
		body["__type"] != "ResourceLimitExceeded" || msg == "" || len(body) != 2 {
		t.Errorf("over the quota: %d, x-amzn-ErrorType %q, body %s; want 400 and {\"__type\":\"ResourceLimitExceeded\",\"Message\":...}",
			resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), b)
	}
	if got := ts.st.Revision(); got != rev {
		t.Errorf("the refused create wrote: revision %d -> %d", rev, got)
	}
}

// TestQuotaServices: a namespace's services up to the quota, then
// refused; deleting one makes room; other namespaces have their own.
func TestQuotaServices(t *testing.T) {
	ts := newServerWith(t, filepath.Join(t.TempDir(), "weft.db"), &cloudmap.Limits{ServicesPerNamespace: 2})
	c := ts.client(nil)
	nsID, other := httpNamespace(t, c, "a"), httpNamespace(t, c, "b")
	first := createService(t, c, nsID, "s1", &sdk.CreateServiceInput{})
	createService(t, c, nsID, "s2", &sdk.CreateServiceInput{})
	overQuota(t, ts, func() error {
		_, err := c.CreateService(ctx, &sdk.CreateServiceInput{Name: aws.String("s3"), NamespaceId: aws.String(nsID)})
		return err
	})
	if n := aws.ToInt32(must(c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(nsID)}))(t).Namespace.ServiceCount); n != 2 {
		t.Fatalf("ServiceCount %d after the refused create, want 2", n)
	}
	createService(t, c, other, "s3", &sdk.CreateServiceInput{})

	must(c.DeleteService(ctx, &sdk.DeleteServiceInput{Id: first.Id}))(t)
	createService(t, c, nsID, "s3", &sdk.CreateServiceInput{})
}

// TestQuotaInstances: instances up to the quota of their service and of
// their namespace (the sum over its services); one more is refused and
// changes nothing, registering an existing id again (an update) is not a
// new instance, and deregistering one makes room.
func TestQuotaInstances(t *testing.T) {
	ts := newServerWith(t, filepath.Join(t.TempDir(), "weft.db"), &cloudmap.Limits{InstancesPerService: 2, InstancesPerNamespace: 3})
	c := ts.client(nil)
	nsID := httpNamespace(t, c, "a")
	s1 := createService(t, c, nsID, "s1", &sdk.CreateServiceInput{}).Id
	s2 := createService(t, c, nsID, "s2", &sdk.CreateServiceInput{}).Id
	register := func(svc *string, id, version string) error {
		_, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc, InstanceId: aws.String(id),
			Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1", "version": version}})
		return err
	}
	registered := func(svc *string, id, version string) {
		t.Helper()
		if err := register(svc, id, version); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	count := func(svc *string) int {
		t.Helper()
		return int(aws.ToInt32(must(c.GetService(ctx, &sdk.GetServiceInput{Id: svc}))(t).Service.InstanceCount))
	}

	registered(s1, "i1", "1")
	registered(s1, "i2", "1")
	overQuota(t, ts, func() error { return register(s1, "i3", "1") }) // the service's quota
	if n := count(s1); n != 2 {
		t.Fatalf("InstanceCount %d after the refused register, want 2", n)
	}
	// An update of an instance at the quota.
	registered(s1, "i2", "2")
	got := must(c.GetInstance(ctx, &sdk.GetInstanceInput{ServiceId: s1, InstanceId: aws.String("i2")}))(t).Instance.Attributes["version"]
	if got != "2" {
		t.Errorf("i2 after its update at the quota: version %q, want 2", got)
	}

	registered(s2, "j1", "1")                                         // the namespace's third
	overQuota(t, ts, func() error { return register(s2, "j2", "1") }) // the namespace's quota, s2 has room
	if n := count(s2); n != 1 {
		t.Fatalf("InstanceCount %d after the refused register, want 1", n)
	}
	registered(s2, "j1", "2") // an update, at the namespace's quota

	must(c.DeregisterInstance(ctx, &sdk.DeregisterInstanceInput{ServiceId: s1, InstanceId: aws.String("i1")}))(t)
	registered(s2, "j2", "1")
	if n1, n2 := count(s1), count(s2); n1 != 1 || n2 != 2 {
		t.Errorf("InstanceCount %d and %d, want 1 and 2", n1, n2)
	}
}

// TestQuotaCustomAttributes: an instance's custom attributes (not AWS_...)
// up to the quota; more is InvalidInput and changes nothing.
func TestQuotaCustomAttributes(t *testing.T) {
	ts := newServerWith(t, filepath.Join(t.TempDir(), "weft.db"), &cloudmap.Limits{CustomAttributesPerInstance: 2})
	c := ts.client(nil)
	svc := createService(t, c, httpNamespace(t, c, "a"), "s", &sdk.CreateServiceInput{}).Id
	attrs := map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "80", "a": "1", "b": "2"}
	must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc, InstanceId: aws.String("i"), Attributes: attrs}))(t)
	attrs["c"] = "3"
	rev := ts.st.Revision()
	_, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc, InstanceId: aws.String("i"), Attributes: attrs})
	wantCode(t, err, "InvalidInput")
	if got := ts.st.Revision(); got != rev {
		t.Errorf("the refused register wrote: revision %d -> %d", rev, got)
	}
}
