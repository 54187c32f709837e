package cloudmapapi

import (
	"strings"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/shape"
)

// Action names the IAM action (servicediscovery:<Operation>) and resource
// ARN of a Cloud Map request: the namespace or service it names by id
// (an id or an ARN), the ResourceARN of the tag operations, and "*" for
// the others (creating a namespace, the lists, DiscoverInstances by name,
// operations), as Cloud Map's IAM authorization does.
func Action(region, account, target string, body []byte) (action, resource string) {
	name, _ := strings.CutPrefix(target, TargetPrefix)
	action = "servicediscovery:" + name
	var doc map[string]any
	if len(body) > 0 {
		doc, _ = shape.DecodeObject(body)
	}
	str := func(k string) string {
		s, _ := doc[k].(string)
		return s
	}
	arn := func(kind, id string) string {
		if id == "" {
			return "*"
		}
		// An ARN names the id at its end, whatever account it says: the
		// registry acts on that id, so that is what is authorized.
		if strings.HasPrefix(id, "arn:") {
			id = id[strings.LastIndexByte(id, '/')+1:]
		}
		return "arn:" + appmesh.Partition(region) + ":servicediscovery:" + region + ":" + account + ":" + kind + "/" + id
	}
	switch name {
	case "GetNamespace", "DeleteNamespace", "UpdateHttpNamespace", "UpdatePrivateDnsNamespace", "UpdatePublicDnsNamespace":
		return action, arn("namespace", str("Id"))
	case "CreateService":
		return action, arn("namespace", str("NamespaceId"))
	case "GetService", "DeleteService", "UpdateService":
		return action, arn("service", str("Id"))
	case "TagResource", "UntagResource", "ListTagsForResource":
		if a := str("ResourceARN"); a != "" {
			return action, a
		}
		return action, "*"
	}
	if id := str("ServiceId"); id != "" {
		return action, arn("service", id)
	}
	return action, "*"
}
