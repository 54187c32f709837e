//go:build !linux

package main

import "errors"

// runAppMesh needs Linux: network namespaces and iptables.
func runAppMesh(appmeshOpts) error {
	return errors.New("-appmesh needs Linux (network namespaces and iptables)")
}
