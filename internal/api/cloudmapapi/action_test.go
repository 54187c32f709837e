package cloudmapapi

import "testing"

func TestAction(t *testing.T) {
	const arn = "arn:aws:servicediscovery:us-east-1:111122223333:"
	for _, c := range []struct {
		op, body, resource string
	}{
		{"GetNamespace", `{"Id":"ns-1"}`, arn + "namespace/ns-1"},
		{"CreateService", `{"Name":"s","NamespaceId":"ns-1"}`, arn + "namespace/ns-1"},
		{"DeleteService", `{"Id":"` + arn + `service/srv-1"}`, arn + "service/srv-1"},
		{"RegisterInstance", `{"ServiceId":"srv-1","InstanceId":"i"}`, arn + "service/srv-1"},
		{"GetInstancesHealthStatus", `{"ServiceId":"arn:aws:servicediscovery:us-east-1:999999999999:service/srv-2"}`, arn + "service/srv-2"},
		{"TagResource", `{"ResourceARN":"` + arn + `namespace/ns-1","Tags":[]}`, arn + "namespace/ns-1"},
		{"ListNamespaces", `{}`, "*"},
		{"DiscoverInstances", `{"NamespaceName":"n","ServiceName":"s"}`, "*"},
		{"GetService", `not json`, "*"},
	} {
		action, resource := Action("us-east-1", "111122223333", TargetPrefix+c.op, []byte(c.body))
		if action != "servicediscovery:"+c.op || resource != c.resource {
			t.Errorf("%s %s: %s on %s, want %s", c.op, c.body, action, resource, c.resource)
		}
	}
}
