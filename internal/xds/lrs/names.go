package lrs

import "strings"

// TargetNode returns the virtual node that an Envoy cluster of a proxy in
// mesh calls, reading the name the translator gives a target virtual
// node's cluster: cds_egress_<mesh>_<node>_<protocol>_<port>. Other
// clusters (cds_ingress_* for the node's own app and a gateway's
// self-redirect, cds_egress_<mesh>_amazonaws, ..._mesh-allow-all) call no
// virtual node: ok is false.
func TargetNode(mesh, cluster string) (node string, ok bool) {
	rest, ok := strings.CutPrefix(cluster, "cds_egress_"+mesh+"_")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '_')
	if i < 0 || !digits(rest[i+1:]) {
		return "", false
	}
	rest = rest[:i]
	j := strings.LastIndexByte(rest, '_')
	if j <= 0 {
		return "", false
	}
	switch rest[j+1:] {
	case "http", "http2", "grpc", "tcp":
		return rest[:j], true
	}
	return "", false
}

func digits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
