//go:build !linux

package main

import "os/exec"

// dieWithParent: only Linux has a parent-death signal; stopAll remains.
func dieWithParent(*exec.Cmd) {}
