package cloudmapapi_test

import (
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
)

func testInstances(t *testing.T, c *sdk.Client) {
	nsID := createNamespace(t, c, "inst.local")
	svc := createService(t, c, nsID, "app", nil)
	srvID := aws.ToString(svc.Id)
	register := func(id string, attrs map[string]string) *string {
		t.Helper()
		return must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String(id), Attributes: attrs}))(t).OperationId
	}
	opID := register("i-1", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "8080", "version": "v1", "az": "a"})
	if op := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: opID}))(t).Operation; op.Type != types.OperationTypeRegisterInstance ||
		op.Targets["INSTANCE"] != "i-1" || op.Targets["SERVICE"] != srvID {
		t.Errorf("RegisterInstance operation: %+v", op)
	}
	register("i-2", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.2", "version": "v2", "az": "a"})
	register("i-3", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.3", "version": "v2", "az": "b"})
	rev1 := aws.ToInt64(must(c.DiscoverInstancesRevision(ctx, &sdk.DiscoverInstancesRevisionInput{NamespaceName: aws.String("inst.local"), ServiceName: aws.String("app")}))(t).InstancesRevision)
	// Registering an existing id replaces it.
	register("i-1", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.9", "AWS_INSTANCE_PORT": "8080", "version": "v1", "az": "a"})
	rev2 := aws.ToInt64(must(c.DiscoverInstancesRevision(ctx, &sdk.DiscoverInstancesRevisionInput{NamespaceName: aws.String("inst.local"), ServiceName: aws.String("app")}))(t).InstancesRevision)
	if rev2 <= rev1 {
		t.Errorf("InstancesRevision %d after a registration, was %d", rev2, rev1)
	}

	inst := must(c.GetInstance(ctx, &sdk.GetInstanceInput{ServiceId: svc.Arn, InstanceId: aws.String("i-1")}))(t)
	if aws.ToString(inst.Instance.Id) != "i-1" || inst.Instance.Attributes["AWS_INSTANCE_IPV4"] != "10.0.0.9" || aws.ToString(inst.ResourceOwner) != account || aws.ToString(inst.Instance.CreatedByAccount) != account {
		t.Errorf("GetInstance = %+v %+v", inst, inst.Instance)
	}
	var ids []string
	for p := sdk.NewListInstancesPaginator(c, &sdk.ListInstancesInput{ServiceId: svc.Id, MaxResults: aws.Int32(2)}); p.HasMorePages(); {
		for _, i := range must(p.NextPage(ctx))(t).Instances {
			ids = append(ids, aws.ToString(i.Id))
		}
	}
	if !slices.Equal(ids, []string{"i-1", "i-2", "i-3"}) {
		t.Errorf("ListInstances = %v", ids)
	}
	if got := aws.ToInt32(must(c.GetService(ctx, &sdk.GetServiceInput{Id: svc.Id}))(t).Service.InstanceCount); got != 3 {
		t.Errorf("InstanceCount = %d, want 3", got)
	}

	discover := func(query, optional map[string]string, max int32) []string {
		t.Helper()
		in := &sdk.DiscoverInstancesInput{NamespaceName: aws.String("inst.local"), ServiceName: aws.String("app"), QueryParameters: query, OptionalParameters: optional}
		if max > 0 {
			in.MaxResults = aws.Int32(max)
		}
		out := must(c.DiscoverInstances(ctx, in))(t)
		var ids []string
		for _, i := range out.Instances {
			if aws.ToString(i.NamespaceName) != "inst.local" || aws.ToString(i.ServiceName) != "app" || i.HealthStatus != types.HealthStatusUnknown {
				t.Errorf("DiscoverInstances summary %+v", i)
			}
			ids = append(ids, aws.ToString(i.InstanceId))
		}
		if aws.ToInt64(out.InstancesRevision) != rev2 {
			t.Errorf("DiscoverInstances InstancesRevision %d, want %d", aws.ToInt64(out.InstancesRevision), rev2)
		}
		sort.Strings(ids)
		return ids
	}
	discoverTests := []struct {
		name            string
		query, optional map[string]string
		max             int32
		want            []string
	}{
		{"all", nil, nil, 0, []string{"i-1", "i-2", "i-3"}},
		{"query", map[string]string{"version": "v2"}, nil, 0, []string{"i-2", "i-3"}},
		{"query on two keys", map[string]string{"version": "v2", "az": "b"}, nil, 0, []string{"i-3"}},
		{"query matching none", map[string]string{"version": "v3"}, nil, 0, nil},
		{"optional narrows", map[string]string{"version": "v2"}, map[string]string{"az": "a"}, 0, []string{"i-2"}},
		{"optional matching none is ignored", map[string]string{"version": "v2"}, map[string]string{"az": "z"}, 0, []string{"i-2", "i-3"}},
		{"MaxResults", nil, nil, 2, nil}, // two of three, checked below
	}
	for _, tt := range discoverTests {
		t.Run(tt.name, func(t *testing.T) {
			got := discover(tt.query, tt.optional, tt.max)
			if tt.max > 0 {
				if len(got) != int(tt.max) {
					t.Errorf("MaxResults %d: got %v", tt.max, got)
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("DiscoverInstances = %v, want %v", got, tt.want)
			}
		})
	}

	badAttrs := []struct {
		name  string
		attrs map[string]string
	}{
		{"A record without AWS_INSTANCE_IPV4", map[string]string{"AWS_INSTANCE_PORT": "80"}},
		{"not an IPv4 address", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.256"}},
		{"IPv6 in AWS_INSTANCE_IPV4", map[string]string{"AWS_INSTANCE_IPV4": "fd00::1"}},
		{"port out of range", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "65536"}},
		{"bad initial health", map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INIT_HEALTH_STATUS": "SICK"}},
		{"EC2 instance id outside HTTP namespaces", map[string]string{"AWS_EC2_INSTANCE_ID": "i-0123"}},
	}
	for _, tt := range badAttrs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("bad"), Attributes: tt.attrs})
			wantCode(t, err, "InvalidInput")
		})
	}

	dereg := must(c.DeregisterInstance(ctx, &sdk.DeregisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i-3")}))(t)
	if op := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: dereg.OperationId}))(t).Operation; op.Type != types.OperationTypeDeregisterInstance || op.Targets["INSTANCE"] != "i-3" {
		t.Errorf("DeregisterInstance operation: %+v", op)
	}
	_, err := c.GetInstance(ctx, &sdk.GetInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i-3")})
	wantCode(t, err, "InstanceNotFound")
	_, err = c.DeregisterInstance(ctx, &sdk.DeregisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i-3")})
	wantCode(t, err, "InstanceNotFound")
	_, err = c.DiscoverInstances(ctx, &sdk.DiscoverInstancesInput{NamespaceName: aws.String("inst.local"), ServiceName: aws.String("nope")})
	wantCode(t, err, "ServiceNotFound")
	_, err = c.DiscoverInstances(ctx, &sdk.DiscoverInstancesInput{NamespaceName: aws.String("nope.local"), ServiceName: aws.String("app")})
	wantCode(t, err, "NamespaceNotFound")
}

func testHealth(t *testing.T, c *sdk.Client) {
	nsID := createNamespace(t, c, "health.local")
	svc := createService(t, c, nsID, "checked", &sdk.CreateServiceInput{
		DnsConfig:               &types.DnsConfig{DnsRecords: []types.DnsRecord{{Type: types.RecordTypeA, TTL: aws.Int64(10)}}},
		HealthCheckCustomConfig: &types.HealthCheckCustomConfig{FailureThreshold: aws.Int32(3)},
	})
	if aws.ToInt32(svc.HealthCheckCustomConfig.FailureThreshold) != 1 {
		t.Errorf("HealthCheckCustomConfig.FailureThreshold = %d; Cloud Map always reports 1", aws.ToInt32(svc.HealthCheckCustomConfig.FailureThreshold))
	}
	for i, init := range []string{"", "HEALTHY", "UNHEALTHY"} {
		attrs := map[string]string{"AWS_INSTANCE_IPV4": fmt.Sprintf("10.1.0.%d", i+1)}
		if init != "" {
			attrs["AWS_INIT_HEALTH_STATUS"] = init
		}
		must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String(fmt.Sprint("h-", i)), Attributes: attrs}))(t)
	}
	status := func(ids ...string) map[string]types.HealthStatus {
		t.Helper()
		return must(c.GetInstancesHealthStatus(ctx, &sdk.GetInstancesHealthStatusInput{ServiceId: svc.Id, Instances: ids}))(t).Status
	}
	if got := status(); len(got) != 3 || got["h-0"] != types.HealthStatusHealthy || got["h-1"] != types.HealthStatusHealthy || got["h-2"] != types.HealthStatusUnhealthy {
		t.Errorf("initial health %v", got)
	}
	must(c.UpdateInstanceCustomHealthStatus(ctx, &sdk.UpdateInstanceCustomHealthStatusInput{ServiceId: svc.Id, InstanceId: aws.String("h-0"), Status: types.CustomHealthStatusUnhealthy}))(t)
	if got := status("h-0"); len(got) != 1 || got["h-0"] != types.HealthStatusUnhealthy {
		t.Errorf("after marking h-0 unhealthy: %v", got)
	}
	discover := func(filter types.HealthStatusFilter) []string {
		t.Helper()
		out := must(c.DiscoverInstances(ctx, &sdk.DiscoverInstancesInput{NamespaceName: aws.String("health.local"), ServiceName: aws.String("checked"), HealthStatus: filter}))(t)
		var ids []string
		for _, i := range out.Instances {
			ids = append(ids, aws.ToString(i.InstanceId)+"="+string(i.HealthStatus))
		}
		sort.Strings(ids)
		return ids
	}
	healthTests := []struct {
		filter types.HealthStatusFilter
		want   []string
	}{
		{"", []string{"h-1=HEALTHY"}},
		{types.HealthStatusFilterHealthy, []string{"h-1=HEALTHY"}},
		{types.HealthStatusFilterUnhealthy, []string{"h-0=UNHEALTHY", "h-2=UNHEALTHY"}},
		{types.HealthStatusFilterAll, []string{"h-0=UNHEALTHY", "h-1=HEALTHY", "h-2=UNHEALTHY"}},
		{types.HealthStatusFilterHealthyOrElseAll, []string{"h-1=HEALTHY"}},
	}
	for _, tt := range healthTests {
		if got := discover(tt.filter); !slices.Equal(got, tt.want) {
			t.Errorf("DiscoverInstances(HealthStatus=%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
	must(c.UpdateInstanceCustomHealthStatus(ctx, &sdk.UpdateInstanceCustomHealthStatusInput{ServiceId: svc.Id, InstanceId: aws.String("h-1"), Status: types.CustomHealthStatusUnhealthy}))(t)
	if got := discover(types.HealthStatusFilterHealthyOrElseAll); len(got) != 3 {
		t.Errorf("HEALTHY_OR_ELSE_ALL with none healthy = %v, want all three", got)
	}

	plain := createService(t, c, nsID, "unchecked", nil)
	must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: plain.Id, InstanceId: aws.String("p"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.1.1.1"}}))(t)
	_, err := c.UpdateInstanceCustomHealthStatus(ctx, &sdk.UpdateInstanceCustomHealthStatusInput{ServiceId: plain.Id, InstanceId: aws.String("p"), Status: types.CustomHealthStatusUnhealthy})
	wantCode(t, err, "CustomHealthNotFound")
	if got := must(c.GetInstancesHealthStatus(ctx, &sdk.GetInstancesHealthStatusInput{ServiceId: plain.Id}))(t).Status; got["p"] != types.HealthStatusUnknown {
		t.Errorf("health without a health check: %v, want UNKNOWN", got)
	}
	_, err = c.UpdateInstanceCustomHealthStatus(ctx, &sdk.UpdateInstanceCustomHealthStatusInput{ServiceId: svc.Id, InstanceId: aws.String("nope"), Status: types.CustomHealthStatusHealthy})
	wantCode(t, err, "InstanceNotFound")
	_, err = c.GetInstancesHealthStatus(ctx, &sdk.GetInstancesHealthStatusInput{ServiceId: svc.Id, Instances: []string{"nope"}})
	wantCode(t, err, "InstanceNotFound")
}
