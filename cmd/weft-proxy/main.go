// Command weft-proxy is weft's data plane alone: the sidecar and gateway
// proxy of `weft proxy` and the traffic interception of `weft intercept`,
// in a binary that links nothing of the control plane (no API server,
// store, etcd, console or AWS SDK), so it starts with less memory and maps
// fewer pages.
//
//	weft-proxy proxy [flags]       # as `weft proxy [flags]`
//	weft-proxy [flags]             # the same
//	weft-proxy intercept [flags]   # as `weft intercept [flags]`
//	weft-proxy version             # as `weft version` (also --version)
//
// The flags and environment variables are weft's: both binaries run
// internal/proxycmd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/weftmesh/weft/internal/proxycmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "weft-proxy: %v\n", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run accepts `proxy`, `intercept` and `version` as the first argument,
// as weft does, so scripts and task definitions written for weft run with either
// binary; without a command the arguments are the proxy's flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "proxy":
			return proxycmd.Run(ctx, "weft-proxy proxy", args[1:], stdout, stderr)
		case "intercept":
			return proxycmd.Intercept(ctx, "weft-proxy intercept", args[1:], stdout, stderr)
		case "version", "--version", "-version":
			return runVersion(args[1:], stdout, stderr)
		}
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "weft-proxy: unknown command %q: weft-proxy runs the proxy (weft-proxy [proxy] [flags]), weft-proxy intercept and weft-proxy version; the other commands are weft's\n", args[0])
		return errUsage
	}
	return proxycmd.Run(ctx, "weft-proxy [proxy]", args, stdout, stderr)
}
