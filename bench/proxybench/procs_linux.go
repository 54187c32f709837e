package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd when proxybench ends, however it
// ends: a log.Fatal skips stopAll, and children left running kept their
// ports and the descriptors they inherited (a flock on the bench lock,
// held until someone killed them).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
