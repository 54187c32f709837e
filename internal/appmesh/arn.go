package appmesh

import (
	"strings"
)

// Partition returns the AWS partition of a region, as ARNs name it.
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// IsAccountID reports whether s is an AWS account id, 12 digits, as App
// Mesh's and Cloud Map's ARNs and owners hold.
func IsAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ARN returns the ARN of a resource. The account is the mesh owner's: a
// resource created in a shared mesh lives in the owner's mesh.
//
//	arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualRouter/r/route/x
func ARN(region string, r Ref) string {
	var b strings.Builder
	b.WriteString("arn:")
	b.WriteString(Partition(region))
	b.WriteString(":appmesh:")
	b.WriteString(region)
	b.WriteString(":")
	b.WriteString(r.Owner)
	b.WriteString(":mesh/")
	b.WriteString(r.Mesh)
	switch r.Kind {
	case KindMesh:
	case KindRoute:
		b.WriteString("/virtualRouter/" + r.Parent + "/route/" + r.Name)
	case KindGatewayRoute:
		b.WriteString("/virtualGateway/" + r.Parent + "/gatewayRoute/" + r.Name)
	default:
		b.WriteString("/" + string(r.Kind) + "/" + r.Name)
	}
	return b.String()
}

// ParseARN returns the region and resource an App Mesh ARN names. It
// accepts exactly the forms ARN writes; names containing '/' cannot be
// told apart from deeper resources and are not accepted.
func ParseARN(arn string) (region string, r Ref, err error) {
	bad := func() (string, Ref, error) {
		return "", Ref{}, BadRequest("%q is not a valid App Mesh resource ARN", arn)
	}
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "appmesh" || parts[3] == "" || parts[4] == "" {
		return bad()
	}
	if parts[1] != Partition(parts[3]) {
		return bad()
	}
	region, r.Owner = parts[3], parts[4]
	segs := strings.Split(parts[5], "/")
	for _, s := range segs {
		if s == "" {
			return bad()
		}
	}
	if segs[0] != "mesh" || len(segs) < 2 {
		return bad()
	}
	r.Mesh = segs[1]
	switch len(segs) {
	case 2:
		r.Kind, r.Name = KindMesh, r.Mesh
	case 4:
		switch k := Kind(segs[2]); k {
		case KindVirtualNode, KindVirtualService, KindVirtualRouter, KindVirtualGateway:
			r.Kind, r.Name = k, segs[3]
		default:
			return bad()
		}
	case 6:
		switch {
		case segs[2] == string(KindVirtualRouter) && segs[4] == string(KindRoute):
			r.Kind = KindRoute
		case segs[2] == string(KindVirtualGateway) && segs[4] == string(KindGatewayRoute):
			r.Kind = KindGatewayRoute
		default:
			return bad()
		}
		r.Parent, r.Name = segs[3], segs[5]
	default:
		return bad()
	}
	return region, r, nil
}
