package netns

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// OwnNamespace is for a program whose work all needs a network namespace of
// its own, such as a test binary whose proxies bind fixed ports (15000,
// 15001): called first, from TestMain, it runs the program again with the
// same arguments, standard streams and environment plus marker=1, in a new
// anonymous network namespace (unshare --net: it goes away with the copy,
// which dies with this process), and exits with the copy's status. In the
// copy (marker set) it brings the loopback up, removes what killed runs of
// family left behind (Sweep, logged to log) and returns nil: the program
// goes on there. It returns ErrNotRoot, having done nothing, when this
// process is not root; any other error when the loopback cannot be set up.
func OwnNamespace(ctx context.Context, marker, family string, log io.Writer) error {
	if os.Getenv(marker) != "" {
		if out, err := exec.CommandContext(ctx, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return fmt.Errorf("ip link set lo up: %w: %s", err, out)
		}
		if gone, err := Sweep(ctx, family); err != nil {
			fmt.Fprintln(log, "sweep:", err)
		} else if len(gone) > 0 {
			fmt.Fprintln(log, "removed what dead runs left:", gone)
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), marker+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The copy dies with this process (go test's timeout kills it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(log, "unshare:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return nil // not reached
}
