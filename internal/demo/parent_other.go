//go:build !linux

package demo

import "syscall"

// dieWithParent needs Linux's parent-death signal; elsewhere the demo
// stops on the signals it is sent.
func dieWithParent() error { return nil }

// childAttr puts a child in a process group of its own.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
