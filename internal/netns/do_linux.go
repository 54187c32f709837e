package netns

import (
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that is inside the host's namespace. Sockets fn
// creates (net.Listen, a net.Dialer's Dial to an IP address) belong to the
// namespace and stay there after Do returns. fn must not start goroutines
// that create sockets, and must not resolve names: those run on other threads.
func (h *Host) Do(fn func() error) error {
	target, err := unix.Open(filepath.Join("/run/netns", h.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", h.Name, err)
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", h.Name, err)
	}
	fnErr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and so dies with this goroutine
		// instead of running other goroutines in the wrong namespace.
		return fmt.Errorf("leave namespace %s: %w", h.Name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
