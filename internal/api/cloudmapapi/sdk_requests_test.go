package cloudmapapi_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go/middleware"
)

func testIdempotency(t *testing.T, ts *testServer, c *sdk.Client) {
	in := &sdk.CreatePrivateDnsNamespaceInput{Name: aws.String("idem.local"), Vpc: aws.String("vpc-1"), CreatorRequestId: aws.String("token-1")}
	first := must(c.CreatePrivateDnsNamespace(ctx, in))(t)
	rev := ts.st.Revision()
	again := must(c.CreatePrivateDnsNamespace(ctx, in))(t)
	if aws.ToString(again.OperationId) != aws.ToString(first.OperationId) {
		t.Errorf("same CreatorRequestId and request: operation %s, first was %s", aws.ToString(again.OperationId), aws.ToString(first.OperationId))
	}
	other := *in
	other.Description = aws.String("another request")
	_, err := c.CreatePrivateDnsNamespace(ctx, &other)
	wantCode(t, err, "DuplicateRequest")
	var dup *types.DuplicateRequest
	if !errors.As(err, &dup) || aws.ToString(dup.DuplicateOperationId) != aws.ToString(first.OperationId) {
		t.Errorf("DuplicateRequest %+v; want DuplicateOperationId %s", dup, aws.ToString(first.OperationId))
	}
	if got := ts.st.Revision(); got != rev {
		t.Errorf("a repeated or duplicate request wrote: revision %d -> %d", rev, got)
	}

	nsID := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: first.OperationId}))(t).Operation.Targets["NAMESPACE"]
	svcIn := &sdk.CreateServiceInput{Name: aws.String("s"), NamespaceId: aws.String(nsID), CreatorRequestId: aws.String("token-2"), Type: types.ServiceTypeOptionHttp}
	s1 := must(c.CreateService(ctx, svcIn))(t).Service
	s2 := must(c.CreateService(ctx, svcIn))(t).Service
	if aws.ToString(s1.Id) != aws.ToString(s2.Id) {
		t.Errorf("CreateService retried with its CreatorRequestId made a second service: %s, %s", aws.ToString(s1.Id), aws.ToString(s2.Id))
	}
	regIn := &sdk.RegisterInstanceInput{ServiceId: s1.Id, InstanceId: aws.String("i"), CreatorRequestId: aws.String("token-3"), Attributes: map[string]string{"k": "v"}}
	r1 := must(c.RegisterInstance(ctx, regIn))(t)
	r2 := must(c.RegisterInstance(ctx, regIn))(t)
	if aws.ToString(r1.OperationId) != aws.ToString(r2.OperationId) {
		t.Errorf("RegisterInstance retried: operations %s, %s", aws.ToString(r1.OperationId), aws.ToString(r2.OperationId))
	}
	regIn.InstanceId = aws.String("j")
	_, err = c.RegisterInstance(ctx, regIn)
	wantCode(t, err, "DuplicateRequest")
}

// testErrors checks that requests that fail change nothing.
func testErrors(t *testing.T, ts *testServer, c *sdk.Client) {
	nsID := createNamespace(t, c, "err.local")
	svc := createService(t, c, nsID, "s", nil)
	must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.3.0.1"}}))(t)
	rev := ts.st.Revision()
	unknownNS, unknownSvc := aws.String("ns-0000000000000000"), aws.String("srv-0000000000000000")
	calls := []struct {
		name string
		call func() error
		code string
	}{
		{"GetNamespace", func() error { _, err := c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: unknownNS}); return err }, "NamespaceNotFound"},
		{"GetNamespace by ARN of another account", func() error {
			_, err := c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String("arn:aws:servicediscovery:" + region + ":444455556666:namespace/" + nsID)})
			return err
		}, "NamespaceNotFound"},
		{"DeleteNamespace with services", func() error {
			_, err := c.DeleteNamespace(ctx, &sdk.DeleteNamespaceInput{Id: aws.String(nsID)})
			return err
		}, "ResourceInUse"},
		{"DeleteNamespace unknown", func() error { _, err := c.DeleteNamespace(ctx, &sdk.DeleteNamespaceInput{Id: unknownNS}); return err }, "NamespaceNotFound"},
		{"UpdatePrivateDnsNamespace unknown", func() error {
			_, err := c.UpdatePrivateDnsNamespace(ctx, &sdk.UpdatePrivateDnsNamespaceInput{Id: unknownNS, Namespace: &types.PrivateDnsNamespaceChange{Description: aws.String("x")}})
			return err
		}, "NamespaceNotFound"},
		{"DeleteService with instances", func() error { _, err := c.DeleteService(ctx, &sdk.DeleteServiceInput{Id: svc.Id}); return err }, "ResourceInUse"},
		{"GetService", func() error { _, err := c.GetService(ctx, &sdk.GetServiceInput{Id: unknownSvc}); return err }, "ServiceNotFound"},
		{"UpdateService", func() error {
			_, err := c.UpdateService(ctx, &sdk.UpdateServiceInput{Id: unknownSvc, Service: &types.ServiceChange{Description: aws.String("x")}})
			return err
		}, "ServiceNotFound"},
		{"RegisterInstance unknown service", func() error {
			_, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: unknownSvc, InstanceId: aws.String("i"), Attributes: map[string]string{}})
			return err
		}, "ServiceNotFound"},
		{"RegisterInstance missing IPv4", func() error {
			_, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("j"), Attributes: map[string]string{"x": "y"}})
			return err
		}, "InvalidInput"},
		{"GetInstance", func() error {
			_, err := c.GetInstance(ctx, &sdk.GetInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("nope")})
			return err
		}, "InstanceNotFound"},
		{"ListInstances", func() error {
			_, err := c.ListInstances(ctx, &sdk.ListInstancesInput{ServiceId: unknownSvc})
			return err
		}, "ServiceNotFound"},
		{"GetServiceAttributes", func() error {
			_, err := c.GetServiceAttributes(ctx, &sdk.GetServiceAttributesInput{ServiceId: unknownSvc})
			return err
		}, "ServiceNotFound"},
		{"invalid instance id", func() error {
			_, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("bad id!"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.3.0.2"}})
			return err
		}, "InvalidInput"},
		{"MaxResults out of range", func() error {
			_, err := c.ListNamespaces(ctx, &sdk.ListNamespacesInput{MaxResults: aws.Int32(101)})
			return err
		}, "InvalidInput"},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), tt.code)
		})
	}
	if got := ts.st.Revision(); got != rev {
		t.Errorf("failed requests wrote: revision %d -> %d", rev, got)
	}
}

// testHostPrefix sends DiscoverInstances the way the SDK does by default,
// to "data-" + host, through a dialer that resolves every name to weft's
// listener (as a hosts entry for data-<name> would): weft accepts any Host.
func testHostPrefix(t *testing.T, ts *testServer, rec *opRecorder) {
	nsID := must(ts.client(nil, disableHostPrefix).CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: aws.String("prefix")}))(t)
	_ = nsID
	addr := ts.srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	dialer := &net.Dialer{}
	c := sdk.New(sdk.Options{
		Region:       region,
		BaseEndpoint: aws.String("http://weft.test:" + port),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: account, SecretAccessKey: "secret"}, nil
		}),
		RetryMaxAttempts: 1,
		APIOptions:       []func(*middleware.Stack) error{rec.middleware},
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}}},
	})
	_, err := c.DiscoverInstancesRevision(ctx, &sdk.DiscoverInstancesRevisionInput{NamespaceName: aws.String("prefix"), ServiceName: aws.String("none")})
	wantCode(t, err, "ServiceNotFound")
	if got := ts.lastHost(); got != "data-weft.test:"+port {
		t.Errorf("DiscoverInstancesRevision reached weft with Host %q, want data-weft.test:%s", got, port)
	}
	must(c.ListNamespaces(ctx, &sdk.ListNamespacesInput{}))(t)
	if got := ts.lastHost(); got != "weft.test:"+port {
		t.Errorf("ListNamespaces reached weft with Host %q", got)
	}
}
