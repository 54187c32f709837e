package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/weftmesh/weft/internal/envvar"
	"github.com/weftmesh/weft/internal/xds/bootstrap"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// runEnvoy dispatches `weft envoy <subcommand>`.
func runEnvoy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: weft envoy bootstrap --resource-arn ARN --xds HOST:PORT [--admin-port 9901] [--xds-ca FILE] [--sds-socket PATH] [--ingress-port 15000] [--egress-port 15001]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stderr, usage)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "bootstrap" {
		fmt.Fprintln(stderr, usage)
		return errors.New("unknown or missing subcommand")
	}
	return runEnvoyBootstrap(args[1:], stdout, stderr)
}

func runEnvoyBootstrap(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft envoy bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg bootstrap.Config
	fs.StringVar(&cfg.ResourceARN, "resource-arn", envOr("APPMESH_RESOURCE_ARN", ""), "virtual node or gateway, as an ARN or mesh/<mesh>/virtualNode/<name> (env APPMESH_RESOURCE_ARN)")
	fs.StringVar(&cfg.XDS, "xds", envOr("APPMESH_XDS_ENDPOINT", "127.0.0.1:15010"), "host:port of weft's xDS listener, or several host:port,host:port,... of weft replicas (env APPMESH_XDS_ENDPOINT)")
	adminPort := fs.Uint("admin-port", 9901, "Envoy admin port, on 0.0.0.0")
	fs.StringVar(&cfg.CAFile, "xds-ca", "", "PEM file of the CA that signed the xDS server's certificate; set it to reach weft over TLS")
	fs.BoolVar(&cfg.LoadReports, "load-reports", false, "make Envoy report its per-cluster load to weft (LRS, for GET /v1/traffic); App Mesh's bootstrap had none, so it is off by default")
	fs.StringVar(&cfg.SDSSocket, "sds-socket", envOr("APPMESH_SDS_SOCKET_PATH", ""), "Unix socket of a local SDS agent (e.g. SPIRE) serving the specs' sds.secretName secrets; default: weft serves them over ADS (env APPMESH_SDS_SOCKET_PATH)")
	var envErrs []error
	ingressPort := fs.Uint("ingress-port", uint(envInt("APPMESH_ENVOY_INGRESS_PORT", 15000, &envErrs)), "port the traffic interception sends inbound traffic to; weft server puts the ingress listener there (env APPMESH_ENVOY_INGRESS_PORT)")
	egressPort := fs.Uint("egress-port", uint(envInt("APPMESH_ENVOY_EGRESS_PORT", 15001, &envErrs)), "port the traffic interception sends outbound traffic to; weft server puts the egress listener there (env APPMESH_ENVOY_EGRESS_PORT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(envErrs...); err != nil {
		return err
	}
	if *ingressPort < 1 || *ingressPort > 65535 || *egressPort < 1 || *egressPort > 65535 || *ingressPort == *egressPort {
		return fmt.Errorf("--ingress-port %d, --egress-port %d: want two different ports 1-65535", *ingressPort, *egressPort)
	}
	if *ingressPort != 15000 { // the defaults stay out of the metadata
		cfg.IngressPort = uint32(*ingressPort)
	}
	if *egressPort != 15001 {
		cfg.EgressPort = uint32(*egressPort)
	}
	if v, ok := lookupUint("ENVOY_ADMIN_ACCESS_PORT"); ok && !flagSet(fs, "admin-port") {
		*adminPort = v
	}
	cfg.AdminPort = uint32(min(*adminPort, 1<<16))
	if cfg.ResourceARN == "" {
		return errors.New("no resource: set --resource-arn (or APPMESH_RESOURCE_ARN) to the virtual node or gateway, e.g. mesh/color-mesh/virtualNode/red")
	}
	// The node id the xDS server will read: refuse here what it would
	// refuse there.
	// (The owner only fills in what a short id leaves to the server.)
	if _, err := xdsserver.ParseNodeID(cfg.ResourceARN, "000000000000"); err != nil {
		return fmt.Errorf("--resource-arn: %w", err)
	}
	if err := envoyStatsFromEnv(&cfg); err != nil {
		return err
	}
	b, err := bootstrap.Build(cfg)
	if err != nil {
		return err
	}
	if err := bootstrap.Validate(b); err != nil {
		return fmt.Errorf("generated bootstrap is invalid: %w", err)
	}
	out, err := bootstrap.JSON(b)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// lookupUint reads an unsigned environment variable, as App Mesh's agent
// read ENVOY_ADMIN_ACCESS_PORT.
func lookupUint(name string) (uint, bool) {
	return envvar.Uint(name)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
