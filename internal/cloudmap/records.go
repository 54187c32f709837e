package cloudmap

// Attribute keys with a meaning to Cloud Map (RegisterInstance's
// Attributes); any other key is a custom attribute.
const (
	AttrIPv4           = "AWS_INSTANCE_IPV4"
	AttrIPv6           = "AWS_INSTANCE_IPV6"
	AttrPort           = "AWS_INSTANCE_PORT"
	AttrCNAME          = "AWS_INSTANCE_CNAME"
	AttrAliasDNSName   = "AWS_ALIAS_DNS_NAME"
	AttrEC2InstanceID  = "AWS_EC2_INSTANCE_ID"
	AttrInitHealthStat = "AWS_INIT_HEALTH_STATUS"
)

// NamespaceRecord is the stored form of a namespace.
type NamespaceRecord struct {
	// Namespace is what GetNamespace returns, except ServiceCount, which is
	// counted when read.
	Namespace Namespace `json:"Namespace"`
	Vpc       string    `json:"Vpc,omitzero"` // private DNS namespaces
	Tags      []Tag     `json:"Tags,omitzero"`
}

// ServiceRecord is the stored form of a service.
type ServiceRecord struct {
	// Service is what GetService returns, except InstanceCount, which is
	// counted when read.
	Service    Service           `json:"Service"`
	Attributes map[string]string `json:"Attributes,omitzero"` // service attributes
	Tags       []Tag             `json:"Tags,omitzero"`
	// InstancesRevision increases with every change to the service's
	// instances or their health (DiscoverInstancesRevision).
	InstancesRevision int64 `json:"InstancesRevision"`
}

// InstanceRecord is the stored form of an instance.
type InstanceRecord struct {
	Instance Instance `json:"Instance"`
	// Health is HEALTHY or UNHEALTHY for services with a custom health
	// check, HEALTHY for services with a Route 53 health check config
	// (weft runs no Route 53 checks), and UNKNOWN for services without.
	Health HealthStatus `json:"Health"`
}

// Healthy reports whether the instance takes traffic: everything but an
// UNHEALTHY instance does.
func (r *InstanceRecord) Healthy() bool { return r.Health != HealthStatusUnhealthy }
