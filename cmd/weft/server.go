package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/server"
	"github.com/weftmesh/weft/internal/xds/lrs"
)

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft server [flags]\n\n"+
			"Runs the control plane: the App Mesh and Cloud Map APIs (and STS GetCallerIdentity)\n"+
			"for the AWS CLI and SDKs, DNS for Cloud Map's DNS namespaces, and xDS for Envoy,\n"+
			"weft proxy and proxyless gRPC. Everything is kept in one store, --data-dir, which\n"+
			"is relative to the directory the server starts in (./weft-data by default).\n"+
			"SIGTERM or Ctrl-C shuts it down gracefully.\n\nflags:")
		fs.PrintDefaults()
	}
	var cfg server.Config
	fs.StringVar(&cfg.APIAddr, "api-addr", envOr("WEFT_API_ADDR", "127.0.0.1:9080"), "App Mesh and Cloud Map API listen address (env WEFT_API_ADDR)")
	fs.StringVar(&cfg.DataDir, "data-dir", envOr("WEFT_DATA_DIR", "weft-data"), "directory of the embedded store (env WEFT_DATA_DIR)")
	fs.StringVar(&cfg.Store, "store", envOr("WEFT_STORE", ""), "store URL: etcd://host:2379,host:2379[/prefix] runs this server as one of several replicas on an etcd cluster, bolt:///path/weft.db a file; default: the embedded store in --data-dir (env WEFT_STORE)")
	fs.StringVar(&cfg.Etcd.CACert, "etcd-cacert", envOr("WEFT_ETCD_CACERT", ""), "PEM CA certificate verifying etcd's; makes the connections to etcd TLS (env WEFT_ETCD_CACERT)")
	fs.StringVar(&cfg.Etcd.Cert, "etcd-cert", envOr("WEFT_ETCD_CERT", ""), "PEM client certificate for etcd (env WEFT_ETCD_CERT)")
	fs.StringVar(&cfg.Etcd.Key, "etcd-key", envOr("WEFT_ETCD_KEY", ""), "PEM key of --etcd-cert (env WEFT_ETCD_KEY)")
	fs.StringVar(&cfg.Etcd.Username, "etcd-username", envOr("WEFT_ETCD_USERNAME", ""), "etcd user, when etcd has authentication on (env WEFT_ETCD_USERNAME)")
	fs.StringVar(&cfg.Etcd.Password, "etcd-password", "", "password of --etcd-username; prefer env WEFT_ETCD_PASSWORD, which other users cannot read in the process list")
	fs.StringVar(&cfg.Region, "region", envOr("WEFT_REGION", "us-east-1"), "region in ARNs (env WEFT_REGION)")
	fs.StringVar(&cfg.AccountID, "account-id", envOr("WEFT_ACCOUNT_ID", "111122223333"), "account that owns resources, 12 digits (env WEFT_ACCOUNT_ID)")
	limits := fs.String("appmesh-limits", envOr("WEFT_APPMESH_LIMITS", ""), "App Mesh quotas to change, as name=value,...; 0 for no limit (env WEFT_APPMESH_LIMITS; defaults: "+appmesh.DefaultLimits().String()+")")
	cmLimits := fs.String("cloudmap-limits", envOr("WEFT_CLOUDMAP_LIMITS", ""), "Cloud Map quotas to change, as name=value,...; 0 for no limit (env WEFT_CLOUDMAP_LIMITS; defaults: "+cloudmap.DefaultLimits().String()+")")
	fs.StringVar(&cfg.DNSAddr, "dns-addr", envOr("WEFT_DNS_ADDR", "127.0.0.1:5353"), "DNS server for Cloud Map's DNS namespaces, UDP and TCP; \"\" for none (env WEFT_DNS_ADDR)")
	upstreams := fs.String("dns-upstreams", envOr("WEFT_DNS_UPSTREAMS", ""), "resolvers for other names, host[:port],...; none: such queries are REFUSED (env WEFT_DNS_UPSTREAMS)")
	fs.StringVar(&cfg.XDSAddr, "xds-addr", envOr("WEFT_XDS_ADDR", "127.0.0.1:15010"), "xDS (ADS) listen address for Envoy, weft proxy and proxyless gRPC; \"\" for none (env WEFT_XDS_ADDR)")
	fs.StringVar(&cfg.XDSTLSCert, "xds-tls-cert", envOr("WEFT_XDS_TLS_CERT", ""), "PEM certificate: serve xDS over TLS, as the App Mesh Envoy image expects (env WEFT_XDS_TLS_CERT)")
	fs.StringVar(&cfg.XDSTLSKey, "xds-tls-key", envOr("WEFT_XDS_TLS_KEY", ""), "PEM key of --xds-tls-cert (env WEFT_XDS_TLS_KEY)")
	fs.StringVar(&cfg.AuthFile, "auth-file", envOr("WEFT_AUTH_FILE", ""), "credentials file, YAML or JSON: access keys and what each may do; API requests must be SigV4-signed and xDS streams must prove their identity (env WEFT_AUTH_FILE)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "serve the API and xDS on non-loopback addresses without --auth-file (anyone who reaches them can do anything)")
	finishLimits := limitFlags(fs, &cfg)
	finishRemote := cloudMapRemoteFlags(fs, &cfg)
	fs.BoolVar(&cfg.XDSInsecure, "xds-insecure", envOr("WEFT_XDS_INSECURE", "") == "true", "send proxies their certificate and key without proof of identity although --xds-addr is not loopback (env WEFT_XDS_INSECURE=true)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", envOr("WEFT_TRUST_DOMAIN", ca.DefaultTrustDomain), "SPIFFE trust domain of the proxies' certificates (env WEFT_TRUST_DOMAIN)")
	lifetime := fs.String("cert-lifetime", envOr("WEFT_CERT_LIFETIME", ca.DefaultLeafLifetime.String()), "lifetime of the proxies' certificates, renewed at two thirds of it (env WEFT_CERT_LIFETIME)")
	fs.StringVar(&cfg.CACertFile, "ca-cert", envOr("WEFT_CA_CERT", ""), "PEM certificate (then its chain) of an existing CA to sign with, imported at first start; default: weft creates one (env WEFT_CA_CERT)")
	fs.StringVar(&cfg.CAKeyFile, "ca-key", envOr("WEFT_CA_KEY", ""), "PEM private key of --ca-cert (env WEFT_CA_KEY)")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", envOr("OTEL_EXPORTER_OTLP_ENDPOINT", ""), "OTLP/gRPC collector for traces of API writes: http://host:4317 (plaintext), https://... or host:port (TLS; plaintext on loopback); \"\" for none (env OTEL_EXPORTER_OTLP_ENDPOINT)")
	fs.DurationVar(&cfg.LRS.Interval, "lrs-interval", lrs.DefaultInterval, "how often proxies report their load (LRS on the xDS listener; GET /v1/traffic)")
	fs.DurationVar(&cfg.LRS.Window, "lrs-window", lrs.DefaultWindow, "how long load reports are kept: GET /v1/traffic averages over it (at least twice --lrs-interval)")
	finishTracing := proxyTracingFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := finishTracing(); err != nil {
		return err
	}
	if err := finishLimits(); err != nil {
		return err
	}
	if err := finishRemote(); err != nil {
		return err
	}
	if cfg.Etcd.Password == "" {
		cfg.Etcd.Password = os.Getenv("WEFT_ETCD_PASSWORD")
	}
	var err error
	if cfg.CertLifetime, err = time.ParseDuration(*lifetime); err != nil || cfg.CertLifetime < ca.MinLeafLifetime {
		return fmt.Errorf("--cert-lifetime %q: want a duration of at least %v, e.g. 24h", *lifetime, ca.MinLeafLifetime)
	}
	if u, err := url.Parse("spiffe://" + cfg.TrustDomain); err != nil || u.Host != cfg.TrustDomain || cfg.TrustDomain == "" || strings.ToLower(cfg.TrustDomain) != cfg.TrustDomain {
		return fmt.Errorf("--trust-domain %q: want a lower-case DNS-like name, e.g. weft.local", cfg.TrustDomain)
	}
	if err := parseQuotas(&cfg, *limits, *cmLimits); err != nil {
		return err
	}
	for _, u := range strings.Split(*upstreams, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.DNSUpstreams = append(cfg.DNSUpstreams, u)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	return server.Run(ctx, cfg, log)
}

// parseQuotas sets cfg's App Mesh and Cloud Map quotas from the values of
// --appmesh-limits and --cloudmap-limits, each applied to its API's
// defaults.
func parseQuotas(cfg *server.Config, appMesh, cloudMap string) error {
	mesh, err := appmesh.ParseLimits(appMesh, appmesh.DefaultLimits())
	if err != nil {
		return fmt.Errorf("--appmesh-limits: %w", err)
	}
	cm, err := cloudmap.ParseLimits(cloudMap, cloudmap.DefaultLimits())
	if err != nil {
		return fmt.Errorf("--cloudmap-limits: %w", err)
	}
	cfg.Limits, cfg.CloudMapLimits = &mesh, &cm
	return nil
}
