package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	// Linked so that protojson can decode the TLS parts of the goldens.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// knownUnsupported lists the fields weft proxy NACKs on purpose in the
// translator's output: none.
var knownUnsupported = map[string]bool{}

// TestTranslatorGoldens builds every resource of every translator golden
// (Envoy and weft proxy identities; proxyless goldens are for gRPC
// clients) and requires that weft proxy accepts it, except the fields in
// knownUnsupported. TLS included: the certificate files the goldens name
// are replaced by real ones made here, and secrets may come from ADS or
// the SDS socket.
func TestTranslatorGoldens(t *testing.T) {
	files, err := filepath.Glob("../xds/translate/testdata/*/golden/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skip("no translator goldens yet")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := stats.NewStore()
	sinks := accesslog.NewSinks(accesslog.Buffering{}, st)
	defer sinks.Close()
	built, tls, withTLS := 0, 0, 0
	pki := goldenPKI(t)
	ts := tlsctx.NewStore(st, log, true)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raw = pki.rewrite(t, raw)
		var g struct {
			Identity  struct{ Proxyless bool }
			Listeners []json.RawMessage
			Routes    []json.RawMessage
			Clusters  []json.RawMessage
			Endpoints []json.RawMessage
		}
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if g.Identity.Proxyless {
			continue
		}
		name := strings.TrimPrefix(f, "../xds/translate/testdata/")
		check := func(kind string, err error) {
			t.Helper()
			if err == nil {
				built++
				if strings.Contains(kind, "+tls") {
					withTLS++
				}
				return
			}
			var ue *strict.UnsupportedError
			if errors.As(err, &ue) && knownUnsupported[ue.Field] {
				tls++
				return
			}
			t.Errorf("%s: %s NACKed: %v", name, kind, err)
		}
		dec := func(b json.RawMessage, m proto.Message) {
			t.Helper()
			// Goldens may use log paths that do not exist here; the
			// access log sink is opened in a temp dir instead.
			if err := protojson.Unmarshal(b, m); err != nil {
				t.Fatalf("%s: decode %T: %v", name, m, err)
			}
		}
		mgr := cluster.NewManager(t.Context(), st, log)
		mgr.SetTLS(ts)
		var cls []*clusterv3.Cluster
		for _, b := range g.Clusters {
			c := &clusterv3.Cluster{}
			dec(b, c)
			_, err := cluster.Build(c, st, log, ts)
			check("cluster "+c.GetName()+tlsMark(c.GetTransportSocket() != nil), err)
			if err == nil {
				cls = append(cls, c)
			}
		}
		if _, err := mgr.Apply(cls); err != nil {
			t.Errorf("%s: apply clusters: %v", name, err)
		}
		for _, b := range g.Endpoints {
			e := &endpointv3.ClusterLoadAssignment{}
			dec(b, e)
			check("endpoints "+e.GetClusterName(), mgr.SetEndpoints([]*endpointv3.ClusterLoadAssignment{e}))
		}
		mgr.Close()
		for _, b := range g.Routes {
			r := &routev3.RouteConfiguration{}
			dec(b, r)
			_, err := route.Compile(r)
			check("route "+r.GetName(), err)
		}
		deps := httpconn.Deps{Sinks: sinks, Stats: st, Log: log}
		for _, b := range g.Listeners {
			l := &listenerv3.Listener{}
			dec(b, l)
			redirectLogs(t, l)
			_, _, err := buildListener(l, deps, mgr, ts)
			hasTLS := false
			for _, fc := range l.GetFilterChains() {
				hasTLS = hasTLS || fc.GetTransportSocket() != nil
			}
			check("listener "+l.GetName()+tlsMark(hasTLS), err)
		}
	}
	t.Logf("built %d resources, %d of them with TLS; %d NACKed for a known unsupported field", built, withTLS, tls)
	if built == 0 {
		t.Fatal("no resource built")
	}
	if withTLS == 0 {
		t.Fatal("no golden resource with TLS was built")
	}
}

func tlsMark(b bool) string {
	if b {
		return " (+tls)"
	}
	return ""
}

// goldenFiles are real certificate files standing in for the paths the
// goldens name (/keys/... on the hosts of the App Mesh examples).
type goldenFiles struct{ chain, key, ca string }

func goldenPKI(t *testing.T) goldenFiles {
	ca := tlstest.NewCA(t, "golden")
	leaf := ca.Issue(t, []string{"golden.local"})
	dir := t.TempDir()
	return goldenFiles{chain: tlstest.Write(t, dir, "chain.pem", leaf.CertPEM), key: tlstest.Write(t, dir, "key.pem", leaf.KeyPEM),
		ca: tlstest.Write(t, dir, "ca.pem", ca.PEM)}
}

// rewrite points every certificate_chain, private_key and trusted_ca file
// of a golden at the real files.
func (g goldenFiles) rewrite(t *testing.T, raw []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	walk(v, func(obj map[string]any) {
		for k, path := range map[string]string{"certificate_chain": g.chain, "private_key": g.key, "trusted_ca": g.ca} {
			if ds, ok := obj[k].(map[string]any); ok {
				if _, ok := ds["filename"]; ok {
					ds["filename"] = path
				}
			}
		}
	})
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// redirectLogs points file access logs at a temp dir so the test does not
// write to /dev/stdout or paths of the example specs.
func redirectLogs(t *testing.T, l *listenerv3.Listener) {
	t.Helper()
	dir := t.TempDir()
	b, _ := protojson.Marshal(l)
	s := string(b)
	if !strings.Contains(s, `"path"`) {
		return
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	walk(m, func(obj map[string]any) {
		if typ, _ := obj["@type"].(string); strings.HasSuffix(typ, "FileAccessLog") {
			obj["path"] = filepath.Join(dir, "access.log")
		}
	})
	nb, _ := json.Marshal(m)
	if err := protojson.Unmarshal(nb, l); err != nil {
		t.Fatal(err)
	}
}

func walk(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, c := range x {
			walk(c, fn)
		}
	case []any:
		for _, c := range x {
			walk(c, fn)
		}
	}
}
