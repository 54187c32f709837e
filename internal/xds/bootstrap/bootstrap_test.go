package bootstrap

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestBootstrap(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		typ  clusterv3.Cluster_DiscoveryType
	}{
		{"arn-ip", Config{ResourceARN: "arn:aws:appmesh:us-east-1:111122223333:mesh/color-mesh/virtualNode/red", XDS: "127.0.0.1:15010", AdminPort: 9901}, clusterv3.Cluster_STATIC},
		{"short-dns-tls", Config{ResourceARN: "mesh/color-mesh/virtualGateway/color-gateway", XDS: "weft.internal:443", AdminPort: 9901, CAFile: "/etc/pki/tls/cert.pem"}, clusterv3.Cluster_STRICT_DNS},
		{"replicas", Config{ResourceARN: "mesh/color-mesh/virtualNode/red", XDS: "10.0.0.1:15010,10.0.0.2:15010, 10.0.0.3:15010", AdminPort: 9901}, clusterv3.Cluster_STATIC},
		{"sds-socket", Config{ResourceARN: "mesh/color-mesh/virtualNode/red", XDS: "127.0.0.1:15010", AdminPort: 9901, SDSSocket: "/run/spire/sockets/agent.sock"}, clusterv3.Cluster_STATIC},
		{"load-reports", Config{ResourceARN: "mesh/color-mesh/virtualNode/red", XDS: "127.0.0.1:15010", AdminPort: 9901, LoadReports: true}, clusterv3.Cluster_STATIC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(b); err != nil {
				t.Fatalf("bootstrap does not validate: %v", err)
			}
			if b.GetNode().GetId() != tt.cfg.ResourceARN || b.GetNode().GetCluster() != tt.cfg.ResourceARN {
				t.Fatalf("node = %v", b.GetNode())
			}
			if b.GetDynamicResources().GetLdsConfig().GetAds() == nil || b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
				t.Fatal("lds and cds are not over ADS")
			}
			if got := b.GetStaticResources().GetClusters()[0].GetType(); got != tt.typ {
				t.Fatalf("xds cluster type %v, want %v", got, tt.typ)
			}
			if n, want := len(b.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()), len(strings.Split(tt.cfg.XDS, ",")); n != want {
				t.Fatalf("xds cluster has %d hosts, want one per address (%d)", n, want)
			}
			if (tt.cfg.CAFile != "") != (b.GetStaticResources().GetClusters()[0].GetTransportSocket() != nil) {
				t.Fatal("TLS to the xDS server does not follow CAFile")
			}
			// With an SDS agent: its cluster on the socket, and the node
			// says so; without, neither (secrets come over ADS).
			cls := b.GetStaticResources().GetClusters()
			hasAgent := len(cls) == 2 && cls[1].GetName() == "static_cluster_sds_unix_socket" &&
				cls[1].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath() == tt.cfg.SDSSocket
			flag := b.GetNode().GetMetadata().GetFields()["weft.sds_socket"].GetBoolValue()
			if want := tt.cfg.SDSSocket != ""; hasAgent != want || flag != want || (!want && len(cls) != 1) {
				t.Fatalf("SDS socket %q: agent cluster %t, node metadata %t, %d clusters", tt.cfg.SDSSocket, hasAgent, flag, len(cls))
			}
			// Load reports go to weft's xDS cluster when asked for, and
			// the default is App Mesh's bootstrap, without them.
			lrs := b.GetClusterManager().GetLoadStatsConfig()
			if tt.cfg.LoadReports != (lrs != nil) || (lrs != nil && lrs.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "weft_xds") {
				t.Fatalf("LoadReports %t: load_stats_config %v", tt.cfg.LoadReports, lrs)
			}
			out, err := JSON(b)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := JSON(b)
			if !bytes.Equal(out, again) {
				t.Fatal("JSON output is not stable")
			}
			var back bootstrapv3.Bootstrap
			if err := protojson.Unmarshal(out, &back); err != nil || !proto.Equal(&back, b) {
				t.Fatalf("JSON does not read back: %v", err)
			}
			golden := filepath.Join("testdata", tt.name+".json")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("bootstrap differs from %s (go test -update rewrites it):\n%s", golden, out)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	for _, cfg := range []Config{
		{XDS: "127.0.0.1:15010", AdminPort: 9901},
		{ResourceARN: "mesh/m/virtualNode/n", XDS: "127.0.0.1", AdminPort: 9901},
		{ResourceARN: "mesh/m/virtualNode/n", XDS: "127.0.0.1:0", AdminPort: 9901},
		{ResourceARN: "mesh/m/virtualNode/n", XDS: "127.0.0.1:15010,127.0.0.2", AdminPort: 9901},
		{ResourceARN: "mesh/m/virtualNode/n", XDS: ",", AdminPort: 9901},
		{ResourceARN: "mesh/m/virtualNode/n", XDS: "127.0.0.1:15010"},
	} {
		if _, err := Build(cfg); err == nil {
			t.Errorf("Build(%+v) succeeded", cfg)
		}
	}
}

// TestValidateLooksInsideAny: the admin access log's config is packed in
// an Any, where ValidateAll does not look.
func TestValidateLooksInsideAny(t *testing.T) {
	b, err := Build(Config{ResourceARN: "mesh/m/virtualNode/n", XDS: "127.0.0.1:15010", AdminPort: 9901})
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := anypb.New(&fileaccesslogv3.FileAccessLog{}) // no path
	b.Admin.AccessLog[0].ConfigType = &accesslogv3.AccessLog_TypedConfig{TypedConfig: bad}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll saw inside the Any after all: %v", err)
	}
	if err := Validate(b); err == nil || !strings.Contains(err.Error(), "Path") {
		t.Fatalf("Validate = %v, want the empty path", err)
	}
}

func TestBootstrapStatsTagsAndDogStatsD(t *testing.T) {
	for _, d := range []*DogStatsD{{Address: "127.0.0.1", Port: 8125, FlushInterval: 2 * time.Second}, {SocketPath: "/run/datadog/dsd.socket"}} {
		b, err := Build(Config{ResourceARN: "mesh/color-mesh/virtualGateway/gw", XDS: "127.0.0.1:15010", AdminPort: 9901, StatsTags: true, DogStatsD: d})
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(b); err != nil {
			t.Fatalf("bootstrap does not validate: %v", err)
		}
		tags := b.GetStatsConfig().GetStatsTags()
		if len(tags) != 2 || tags[0].GetTagName() != "appmesh.mesh" || tags[0].GetFixedValue() != "color-mesh" ||
			tags[1].GetTagName() != "appmesh.virtual_gateway" || tags[1].GetFixedValue() != "gw" {
			t.Errorf("stats tags %v", tags)
		}
		sinks := b.GetStatsSinks()
		if len(sinks) != 1 || sinks[0].GetName() != "envoy.stat_sinks.dog_statsd" {
			t.Fatalf("sinks %v", sinks)
		}
		var sink metricsv3.DogStatsdSink
		if err := sinks[0].GetTypedConfig().UnmarshalTo(&sink); err != nil {
			t.Fatal(err)
		}
		if d.SocketPath != "" {
			if sink.GetAddress().GetPipe().GetPath() != d.SocketPath {
				t.Errorf("sink %v", &sink)
			}
		} else if sa := sink.GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 8125 ||
			sa.GetProtocol() != core.SocketAddress_UDP || b.GetStatsFlushInterval().AsDuration() != 2*time.Second {
			t.Errorf("sink %v, flush %v", &sink, b.GetStatsFlushInterval())
		}
		if _, err := JSON(b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Build(Config{ResourceARN: "mesh/m/virtualNode/n", XDS: "127.0.0.1:15010", AdminPort: 9901,
		DogStatsD: &DogStatsD{Address: "statsd.local", Port: 8125}}); err == nil {
		t.Error("a DogStatsD host name was accepted (Envoy needs an IP)")
	}
}
