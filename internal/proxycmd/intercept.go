package proxycmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/weftmesh/weft/internal/envvar"
	"github.com/weftmesh/weft/internal/intercept"
)

// Intercept installs (or with --remove removes) the iptables rules of ECS's
// APPMESH proxy configuration. prog is how the usage names the command
// ("weft intercept"). -h prints the usage and returns flag.ErrHelp.
func Intercept(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: "+prog+" [flags]\n\n"+
			"Installs in the current network namespace the iptables rules of ECS's APPMESH\n"+
			"proxyConfiguration (chains APPMESH_INGRESS and APPMESH_EGRESS of the nat table).\n"+
			"Running it again replaces them; --remove takes them away. Needs CAP_NET_ADMIN.\n\nflags:")
		fs.PrintDefaults()
	}
	var envErrs []error
	appPorts := fs.String("app-ports", envvar.Or("APPMESH_APP_PORTS", ""), "comma-separated ports the application listens on; inbound TCP to them goes to the proxy (env APPMESH_APP_PORTS)")
	ignoredUID := fs.Int("ignored-uid", envvar.Int("APPMESH_IGNORE_UID", intercept.DefaultIgnoredUID, &envErrs), "UID of the proxy: its outbound traffic is not redirected; -1 for none (env APPMESH_IGNORE_UID)")
	ignoredGID := fs.Int("ignored-gid", envvar.Int("APPMESH_IGNORE_GID", -1, &envErrs), "GID of the proxy: its outbound traffic is not redirected; -1 for none (env APPMESH_IGNORE_GID)")
	ingress := fs.Uint("proxy-ingress-port", uint(envvar.Int("APPMESH_ENVOY_INGRESS_PORT", intercept.DefaultProxyIngressPort, &envErrs)), "the proxy's ingress listener (env APPMESH_ENVOY_INGRESS_PORT)")
	egress := fs.Uint("proxy-egress-port", uint(envvar.Int("APPMESH_ENVOY_EGRESS_PORT", intercept.DefaultProxyEgressPort, &envErrs)), "the proxy's egress listener (env APPMESH_ENVOY_EGRESS_PORT)")
	ignoredIPs := fs.String("egress-ignored-ips", envvar.Or("APPMESH_EGRESS_IGNORED_IP", ""), "comma-separated addresses or CIDR blocks whose outbound traffic is not redirected (env APPMESH_EGRESS_IGNORED_IP)")
	ignoredPorts := fs.String("egress-ignored-ports", envvar.Or("APPMESH_EGRESS_IGNORED_PORTS", ""), "comma-separated destination ports whose outbound traffic is not redirected; 22 always is (env APPMESH_EGRESS_IGNORED_PORTS)")
	ipv6 := fs.Bool("ipv6", envvar.Or("APPMESH_ENABLE_IPV6", "") == "1", "also install the rules with ip6tables (env APPMESH_ENABLE_IPV6=1)")
	remove := fs.Bool("remove", false, "remove the rules instead of installing them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(envErrs) > 0 {
		return errors.Join(envErrs...)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	families := []intercept.Family{intercept.IPv4}
	if *ipv6 {
		families = append(families, intercept.IPv6)
	}
	if *remove {
		for _, f := range families {
			if err := (intercept.Tables{Family: f, Log: log}).Remove(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	cfg := intercept.Config{IgnoredUID: *ignoredUID, IgnoredGID: *ignoredGID}
	var err error
	if cfg.AppPorts, err = intercept.ParsePorts(*appPorts); err != nil {
		return fmt.Errorf("--app-ports: %w", err)
	}
	if cfg.EgressIgnoredPorts, err = intercept.ParsePorts(*ignoredPorts); err != nil {
		return fmt.Errorf("--egress-ignored-ports: %w", err)
	}
	if cfg.EgressIgnoredIPs, err = intercept.ParseIPs(*ignoredIPs); err != nil {
		return fmt.Errorf("--egress-ignored-ips: %w", err)
	}
	if *ingress > 65535 || *egress > 65535 {
		return fmt.Errorf("proxy ports must be below 65536")
	}
	cfg.ProxyIngressPort, cfg.ProxyEgressPort = uint16(*ingress), uint16(*egress)
	for _, f := range families {
		if err := (intercept.Tables{Family: f, Log: log}).Apply(ctx, cfg); err != nil {
			return err
		}
	}
	return nil
}
