// Command weft is the whole mesh in one binary: the control plane (server),
// the data plane (proxy) and the tools around them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/internal/envvar"
)

// command is one subcommand. run returns when ctx ends or the work is done.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"server", "run the control plane: App Mesh and Cloud Map APIs, DNS, xDS", runServer},
		{"proxy", "run the data plane: a sidecar or gateway fed by xDS (APPMESH_RESOURCE_ARN)", runProxy},
		{"ca", "show and rotate the mesh's certificate authority: ca status|add-root|activate|remove-root", runCA},
		{"envoy", "print an upstream Envoy bootstrap for weft: envoy bootstrap --resource-arn ARN --xds HOST:PORT", runEnvoy},
		{"token", "issue a join token for a proxy's xDS stream: token create --resource mesh/<m>/virtualNode/<n> --ttl 24h", runToken},
		{"backup", "write a consistent snapshot of a running server's store to a file: backup --out FILE", runBackup},
		{"restore", "write a backup into an empty store: restore --in FILE --store URL", runRestore},
		{"store", "copy one store into another, bbolt to etcd and back: store copy --from URL --to URL", runStore},
		{"intercept", "install the iptables rules of ECS's APPMESH proxyConfiguration", runIntercept},
		{"colorapp", "run the tutorial's color app (/ answers COLOR, /healthcheck answers hi)", runColorApp},
		{"demo", "run the tutorial's color mesh on this machine and show its traffic split live", runDemo},
		{"version", "print weft's version, commit, build date and Go version", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: weft <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'weft <command> -h' for a command's flags.")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name := os.Args[1]
	if name == "--version" || name == "-version" {
		name = "version"
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, os.Args[2:], os.Stdout, os.Stderr)
		switch {
		case err == nil:
			return
		case errors.Is(err, flag.ErrHelp):
			os.Exit(0)
		default:
			fmt.Fprintf(os.Stderr, "weft %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	fmt.Fprintf(os.Stderr, "weft: unknown command %q\n\n", name)
	usage(os.Stderr)
	os.Exit(2)
}

// envOr returns the environment variable's value, or def when it is unset.
func envOr(name, def string) string {
	return envvar.Or(name, def)
}
