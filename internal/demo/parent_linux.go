package demo

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dieWithParent has the kernel send this process SIGTERM when its parent
// exits (a closed terminal's shell, a killed test runner), so that the demo
// stops its children and removes what it made instead of being orphaned.
func dieWithParent() error {
	ppid := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_PDEATHSIG: %w", err)
	}
	// The parent may have gone before the request took effect.
	if os.Getppid() != ppid {
		return errors.New("the parent process has already exited")
	}
	return nil
}

// childAttr puts a child in a process group of its own and has the kernel
// kill it if the demo dies without stopping it (SIGKILL). The parent-death
// signal follows the thread that forks: procs start children from one
// locked thread that lives as long as the demo. It does not survive a
// change of user (setpriv for the proxies); the lock file's sweep covers
// those.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
