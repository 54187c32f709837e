package cloudmapapi_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go"
)

// TestNextToken: every listing pages with the NextToken of its previous
// page, one item at a time, to the same items as one page; a token it did
// not give (garbage, edited, the bare id the token once was, another
// listing's) is InvalidInput naming NextToken, never a 5xx.
func TestNextToken(t *testing.T) {
	ts := newServer(t, filepath.Join(t.TempDir(), "weft.db"))
	c := ts.client(nil)
	for _, name := range []string{"a", "b", "c"} {
		httpNamespace(t, c, name)
	}
	nsID := httpNamespace(t, c, "d")
	var services []*string
	for i := range 3 {
		svc := createService(t, c, nsID, fmt.Sprintf("s%d", i), &sdk.CreateServiceInput{HealthCheckCustomConfig: &types.HealthCheckCustomConfig{}})
		services = append(services, svc.Id)
	}
	for i := range 3 {
		for _, svc := range services[:2] {
			must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc, InstanceId: aws.String(fmt.Sprintf("i%d", i)),
				Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1"}}))(t)
		}
	}

	// Each listing: one page of everything; or one item after the token.
	type listing func(max int32, token *string) (items []string, next *string, err error)
	ids := func(n int, id func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = id(i)
		}
		return out
	}
	namespaces := func(max int32, token *string) ([]string, *string, error) {
		out, err := c.ListNamespaces(ctx, &sdk.ListNamespacesInput{MaxResults: &max, NextToken: token})
		if err != nil {
			return nil, nil, err
		}
		return ids(len(out.Namespaces), func(i int) string { return *out.Namespaces[i].Id }), out.NextToken, nil
	}
	servicesOf := func(max int32, token *string) ([]string, *string, error) {
		out, err := c.ListServices(ctx, &sdk.ListServicesInput{MaxResults: &max, NextToken: token})
		if err != nil {
			return nil, nil, err
		}
		return ids(len(out.Services), func(i int) string { return *out.Services[i].Id }), out.NextToken, nil
	}
	instancesOf := func(svc *string) listing {
		return func(max int32, token *string) ([]string, *string, error) {
			out, err := c.ListInstances(ctx, &sdk.ListInstancesInput{ServiceId: svc, MaxResults: &max, NextToken: token})
			if err != nil {
				return nil, nil, err
			}
			return ids(len(out.Instances), func(i int) string { return *out.Instances[i].Id }), out.NextToken, nil
		}
	}
	health := func(max int32, token *string) ([]string, *string, error) {
		out, err := c.GetInstancesHealthStatus(ctx, &sdk.GetInstancesHealthStatusInput{ServiceId: services[0], MaxResults: &max, NextToken: token})
		if err != nil {
			return nil, nil, err
		}
		var got []string
		for id := range out.Status {
			got = append(got, id)
		}
		return got, out.NextToken, nil
	}
	operations := func(max int32, token *string) ([]string, *string, error) {
		out, err := c.ListOperations(ctx, &sdk.ListOperationsInput{MaxResults: &max, NextToken: token})
		if err != nil {
			return nil, nil, err
		}
		return ids(len(out.Operations), func(i int) string { return *out.Operations[i].Id }), out.NextToken, nil
	}
	listings := []struct {
		name string
		list listing
	}{
		{"ListNamespaces", namespaces},
		{"ListServices", servicesOf},
		{"ListInstances", instancesOf(services[0])},
		{"GetInstancesHealthStatus", health},
		{"ListOperations", operations},
	}
	firstToken := map[string]*string{} // of each listing, after one item
	for _, l := range listings {
		t.Run(l.name+" pages", func(t *testing.T) {
			all, next, err := l.list(100, nil)
			if err != nil || next != nil || len(all) < 3 {
				t.Fatalf("one page: %v, %v, next %v", all, err, next)
			}
			var paged []string
			var token *string
			for pages := 0; pages == 0 || token != nil; pages++ {
				if pages > len(all) {
					t.Fatalf("more pages than items: %v", paged)
				}
				items, next, err := l.list(1, token)
				if err != nil {
					t.Fatalf("page %d: %v", pages+1, err)
				}
				if pages == 0 {
					firstToken[l.name] = next
				}
				paged, token = append(paged, items...), next
			}
			slices.Sort(all) // GetInstancesHealthStatus answers a map
			slices.Sort(paged)
			if !slices.Equal(paged, all) {
				t.Errorf("a page at a time: %v, want %v", paged, all)
			}
		})
	}

	tok := firstToken["ListInstances"]
	raw, _ := base64.RawURLEncoding.DecodeString(aws.ToString(tok))
	edited := append([]byte(nil), raw...)
	edited[len(edited)-1] ^= 1
	bad := []struct {
		name  string
		list  listing
		token string
	}{
		{"garbage", namespaces, "!!not a token!!"},
		{"long garbage", servicesOf, strings.Repeat("A", 4000)},
		{"the bare id", instancesOf(services[0]), "i0"},
		{"the bare id, base64", instancesOf(services[0]), base64.RawURLEncoding.EncodeToString([]byte("i0"))},
		{"edited", instancesOf(services[0]), base64.RawURLEncoding.EncodeToString(edited)},
		{"another service's instances", instancesOf(services[1]), aws.ToString(tok)},
		{"another service's health", func(max int32, token *string) ([]string, *string, error) {
			_, err := c.GetInstancesHealthStatus(ctx, &sdk.GetInstancesHealthStatusInput{ServiceId: services[1], MaxResults: &max, NextToken: token})
			return nil, nil, err
		}, aws.ToString(tok)},
		{"ListServices' for ListNamespaces", namespaces, aws.ToString(firstToken["ListServices"])},
		{"ListNamespaces' for ListOperations", operations, aws.ToString(firstToken["ListNamespaces"])},
		{"ListInstances' for ListServices", servicesOf, aws.ToString(tok)},
	}
	rev := ts.st.Revision()
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tt.list(1, &tt.token)
			wantCode(t, err, "InvalidInput")
			var ae smithy.APIError
			if errors.As(err, &ae); !strings.Contains(ae.ErrorMessage(), "NextToken") {
				t.Errorf("message %q does not name NextToken", ae.ErrorMessage())
			}
		})
	}
	if got := ts.st.Revision(); got != rev {
		t.Errorf("listings wrote: revision %d -> %d", rev, got)
	}
}
