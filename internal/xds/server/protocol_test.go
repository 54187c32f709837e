package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/xds/translate"
)

const (
	cdsType = resource.ClusterType
	edsType = resource.EndpointType
	ldsType = resource.ListenerType
	rdsType = resource.RouteType
)

func envoyNode(id string) *core.Node { return &core.Node{Id: id, UserAgentName: "envoy"} }

// colorStore holds mesh m with red -> blue.local (provided by blue), and
// Cloud Map instances of blue.
func colorStore(t *testing.T) *bolt.Store {
	st := openStore(t)
	putNamespace(t, st)
	putCMService(t, st, "red")
	putCMService(t, st, "blue")
	putInstance(t, st, "blue", "blue-1", "10.0.0.1")
	putMesh(t, st, "m")
	putNode(t, st, "m", "blue")
	putService(t, st, "m", "blue.local", "blue")
	putNode(t, st, "m", "red", "blue.local")
	return st
}

// expect checks a response's type and resource names.
func expect(t *testing.T, r *discovery.DiscoveryResponse, typeURL string, want ...string) {
	t.Helper()
	got := names(t, r)
	if r.GetTypeUrl() != typeURL || !slices.Equal(got, want) {
		t.Fatalf("got %s %v (version %s), want %s %v", r.GetTypeUrl(), got, r.GetVersionInfo(), typeURL, want)
	}
}

// envoyStart plays Envoy's start: wildcard CDS and LDS, then EDS and RDS
// for what they name, ACKing everything. It returns the last response of
// each type.
func envoyStart(t *testing.T, c *adsClient) map[string]*discovery.DiscoveryResponse {
	t.Helper()
	c.request(cdsType, "", "", nil, "")
	c.request(ldsType, "", "", nil, "")
	// In type order, the listener right after the cluster: a stream does
	// not wait for an ACK of one type to be sent the next.
	cds := c.next()
	expect(t, cds, cdsType, "cds_egress_m_blue")
	lds := c.next()
	expect(t, lds, ldsType, "lds_ingress_0.0.0.0_15000")
	c.ack(cds)
	c.request(edsType, "", "", []string{"cds_egress_m_blue"}, "")
	eds := c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	c.ack(lds)
	c.request(rdsType, "", "", []string{"rds_egress_http_80"}, "")
	rds := c.next()
	expect(t, rds, rdsType, "rds_egress_http_80")
	c.ack(eds, "cds_egress_m_blue")
	c.ack(rds, "rds_egress_http_80")
	return map[string]*discovery.DiscoveryResponse{cdsType: cds, edsType: eds, ldsType: lds, rdsType: rds}
}

func TestEnvoyProtocol(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	last := envoyStart(t, c)

	// An endpoint registers: EDS only, with both endpoints.
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	eds := c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	if n := len(mustCLA(t, eds).GetEndpoints()[0].GetLbEndpoints()); n != 2 {
		t.Fatalf("EDS has %d endpoints, want 2", n)
	}
	c.ack(eds, "cds_egress_m_blue")

	// A service red does not use: nothing. Then red gains it as a
	// backend: CDS first. Nothing arrived in between, or it would be
	// the next response instead.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	cds := c.next()
	expect(t, cds, cdsType, "cds_egress_m_blue", "cds_egress_m_green")
	if cds.GetVersionInfo() == last[cdsType].GetVersionInfo() {
		t.Fatal("CDS version did not change")
	}
	// Without waiting for its ACK: EDS, re-sent after any cluster change
	// (App Mesh roadmap #192), then the route.
	eds1 := c.next()
	expect(t, eds1, edsType, "cds_egress_m_blue")
	rds := c.next()
	expect(t, rds, rdsType, "rds_egress_http_80")
	c.ack(cds)
	// The client asks for the new cluster's endpoints.
	c.ack(eds1, "cds_egress_m_blue", "cds_egress_m_green")
	eds2 := c.next()
	expect(t, eds2, edsType, "cds_egress_m_blue", "cds_egress_m_green")
	c.ack(eds2, "cds_egress_m_blue", "cds_egress_m_green")
	c.ack(rds, "rds_egress_http_80")

	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Replicas == 1 && p.Types["cds"].Acked == cds.GetVersionInfo() && p.Types["eds"].Acked == eds2.GetVersionInfo() &&
			p.Types["rds"].Acked == rds.GetVersionInfo() && p.Types["lds"].Acked == last[ldsType].GetVersionInfo() && p.LastNack == nil
	})
	if writeToAckCount(t, srv, "eds") == 0 {
		t.Fatal("no write-to-ACK observations")
	}

	// GET /v1/proxies shows the same.
	rec := httptest.NewRecorder()
	srv.ProxiesHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/proxies", nil))
	var body struct{ Proxies []ProxyStatus }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Proxies) != 1 ||
		body.Proxies[0].Types["cds"].Acked != cds.GetVersionInfo() || body.Proxies[0].Mesh != "m" || body.Proxies[0].Kind != "virtualNode" {
		t.Fatalf("GET /v1/proxies: %v\n%s", err, rec.Body.String())
	}
}

// waitStatus waits until the node's status satisfies ok: the server
// handles the client's requests on its own goroutines.
func waitStatus(t *testing.T, s *Server, nodeID string, ok func(ProxyStatus) bool) ProxyStatus {
	t.Helper()
	deadline := time.After(wait)
	var last ProxyStatus
	for {
		changed := s.StatusChanged()
		for _, p := range s.Proxies() {
			if p.NodeID == nodeID {
				last = p
				if ok(p) {
					return p
				}
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("status of %s never as expected; last: %+v", nodeID, last)
		}
	}
}

func mustCLA(t *testing.T, r *discovery.DiscoveryResponse) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	if len(r.GetResources()) != 1 {
		t.Fatalf("%d resources, want 1", len(r.GetResources()))
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := r.GetResources()[0].UnmarshalTo(&cla); err != nil {
		t.Fatal(err)
	}
	return &cla
}

func TestNACKParksUntilNextSnapshot(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	last := envoyStart(t, c)

	// A change the client rejects.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	bad := c.next()
	expect(t, bad, cdsType, "cds_egress_m_blue", "cds_egress_m_green")
	// The rest of the change follows at once.
	eds := c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	rds := c.next()
	expect(t, rds, rdsType, "rds_egress_http_80")
	c.request(cdsType, last[cdsType].GetVersionInfo(), bad.GetNonce(), nil, "cluster cds_egress_m_green: no thanks")
	c.ack(eds, "cds_egress_m_blue")
	c.ack(rds, "rds_egress_http_80")
	p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.LastNack != nil })
	if p.LastNack.Type != "cds" || p.LastNack.Version != bad.GetVersionInfo() || !strings.Contains(p.LastNack.Message, "no thanks") {
		t.Fatalf("lastNack = %+v", p.LastNack)
	}
	if p.Types["cds"].Acked != last[cdsType].GetVersionInfo() {
		t.Fatalf("acked CDS = %s, want the previous %s", p.Types["cds"].Acked, last[cdsType].GetVersionInfo())
	}
	// The next write: the next CDS carries it, not the rejected version
	// again; a resend loop would have put the rejected version first.
	putNode(t, st, "m", "red", "green.local")
	cds := c.next()
	expect(t, cds, cdsType, "cds_egress_m_green")
	if cds.GetVersionInfo() == bad.GetVersionInfo() {
		t.Fatal("the rejected version was resent")
	}
	if n := testutil.ToFloat64(srv.Server.hub.metrics.nacks.WithLabelValues("cds")); n != 1 {
		t.Fatalf("nacks_total{type=cds} = %v, want 1", n)
	}
	if n := srv.logs.count("proxy rejected configuration"); n != 1 {
		t.Fatalf("the NACK was logged %d times, want once", n)
	}
}

// TestReplicasNACKLogOnce: every replica of a proxy rejects the same push;
// each NACK counts, one log line says it.
func TestReplicasNACKLogOnce(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	var cs []*adsClient
	for range 3 {
		c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
		c.request(ldsType, "", "", nil, "")
		lds := c.next()
		c.request(ldsType, "", lds.GetNonce(), nil, "listener: no thanks")
		cs = append(cs, c)
	}
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Replicas == 3 && testutil.ToFloat64(srv.hub.metrics.nacks.WithLabelValues("lds")) == 3
	})
	if n := srv.logs.count("proxy rejected configuration"); n != 1 {
		t.Fatalf("3 replicas NACKing one version logged %d times, want once", n)
	}
}

func TestUnknownAndMalformedNodes(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	tests := []struct {
		id   string
		code codes.Code
		msg  string
	}{
		{"red", codes.InvalidArgument, "want mesh/<mesh>/virtualNode/<name>"},
		{"mesh/m/virtualService/red", codes.InvalidArgument, "neither virtualNode nor virtualGateway"},
		{"", codes.InvalidArgument, "node.id"},
		{"mesh/nope/virtualNode/red", codes.NotFound, "mesh nope"},
		{"mesh/m@999/virtualNode/red", codes.NotFound, "mesh m (owner 999)"},
		{"mesh/m/virtualNode/ghost", codes.NotFound, "virtualNode ghost not found"},
		{"arn:aws:appmesh:us-east-1:" + owner + ":mesh/m/virtualGateway/red", codes.NotFound, "virtualGateway red"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			c := dialADS(t, srv.addr, envoyNode(tt.id))
			c.request(ldsType, "", "", nil, "")
			err := c.ended()
			if s, _ := grpcstatus.FromError(err); s.Code() != tt.code || !strings.Contains(s.Message(), tt.msg) {
				t.Fatalf("stream ended with %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}
	if n := testutil.ToFloat64(srv.hub.metrics.rejected.WithLabelValues("NotFound")); n != 4 {
		t.Fatalf("streams_rejected_total{code=NotFound} = %v, want 4", n)
	}
}

func TestConnectBeforeNodeExists(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/late"))
	c.request(ldsType, "", "", nil, "")
	if s, _ := grpcstatus.FromError(c.ended()); s.Code() != codes.NotFound {
		t.Fatalf("stream ended with %v, want NotFound", s)
	}
	putNode(t, st, "m", "late", "blue.local")
	// The proxy reconnects, as Envoy and gRPC do after a failed stream.
	c = dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/late"))
	envoyStart(t, c)

	// Deleting it closes the stream with NotFound.
	del(t, st, ref("m", appmesh.KindVirtualNode, "", "late").Key())
	if s, _ := grpcstatus.FromError(c.ended()); s.Code() != codes.NotFound {
		t.Fatalf("stream ended with %v, want NotFound", s)
	}
}

func TestReplicasShareOneTranslation(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	a := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	la := envoyStart(t, a)
	b := dialADS(t, srv.addr, envoyNode("arn:aws:appmesh:us-east-1:"+owner+":mesh/m/virtualNode/red"))
	lb := envoyStart(t, b)
	other := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/blue"))
	other.request(cdsType, "", "", nil, "")
	other.request(ldsType, "", "", nil, "")
	// blue has no backends: an empty CDS, then its listener.
	ocds := other.next()
	expect(t, ocds, cdsType)
	other.ack(ocds)
	expect(t, other.next(), ldsType, "lds_ingress_0.0.0.0_15000")
	for _, typ := range []string{cdsType, edsType, ldsType, rdsType} {
		if la[typ].GetVersionInfo() != lb[typ].GetVersionInfo() {
			t.Fatalf("%s: replicas got versions %s and %s", typ, la[typ].GetVersionInfo(), lb[typ].GetVersionInfo())
		}
	}
	// One translation for red (two node ids, one identity), one for blue.
	if n := testutil.ToFloat64(srv.hub.metrics.translations); n != 2 {
		t.Fatalf("translations_total = %v, want 2", n)
	}
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	expect(t, a.next(), edsType, "cds_egress_m_blue")
	expect(t, b.next(), edsType, "cds_egress_m_blue")
	if n := testutil.ToFloat64(srv.hub.metrics.translations); n != 3 {
		t.Fatalf("translations_total = %v, want 3", n)
	}
	// blue does not depend on its own endpoints: it got nothing. Its next
	// response is the one the next write to it causes.
	putNode(t, st, "m", "blue", "blue.local")
	expect(t, other.next(), cdsType, "cds_egress_m_blue")

	ps := srv.Proxies()
	if len(ps) != 3 || ps[0].Replicas != 1 || ps[1].NodeID != "mesh/m/virtualNode/blue" || ps[2].NodeID != "mesh/m/virtualNode/red" {
		t.Fatalf("proxies = %+v", ps)
	}
}

// TestSubsetRequests plays a gRPC client: it names what it wants, and a
// name that does not exist gets a response without it.
func TestSubsetRequests(t *testing.T) {
	st := colorStore(t)
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, &core.Node{Id: "mesh/m/virtualNode/red", UserAgentName: "gRPC Go"})
	c.request(ldsType, "", "", []string{"missing.local"}, "")
	lds := c.next()
	expect(t, lds, ldsType)
	c.ack(lds, "missing.local")
	c.request(cdsType, "", "", []string{"cds_egress_m_green"}, "")
	cds := c.next()
	expect(t, cds, cdsType, "cds_egress_m_green")
	c.ack(cds, "cds_egress_m_green")
	// Narrowing the subscription sends nothing; widening sends the state.
	c.request(cdsType, cds.GetVersionInfo(), cds.GetNonce(), []string{"cds_egress_m_blue", "cds_egress_m_green"}, "")
	cds2 := c.next()
	expect(t, cds2, cdsType, "cds_egress_m_blue", "cds_egress_m_green")
	if cds2.GetVersionInfo() != cds.GetVersionInfo() {
		t.Fatalf("version changed without a write: %s -> %s", cds.GetVersionInfo(), cds2.GetVersionInfo())
	}
	if p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Types["cds"].LastPush.After(p.Types["lds"].LastPush) }); !p.Proxyless {
		t.Fatal("a gRPC Go client is not proxyless")
	}
}

func TestServerRestart(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	last := envoyStart(t, c)
	srv.stop()
	// Ended with OK (io.EOF to the client), as App Mesh's graceful
	// disconnects did.
	if err := c.ended(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v, want OK", err)
	}
	// A write while the server is down, then a new server on the store.
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	srv = startServer(t, st, fakeTranslate)
	c = dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	// The proxy says what it holds; versions are content hashes, so the
	// unchanged types keep theirs and the endpoints carry the write.
	c.request(cdsType, last[cdsType].GetVersionInfo(), "", nil, "")
	cds := c.next()
	if cds.GetVersionInfo() != last[cdsType].GetVersionInfo() {
		t.Fatalf("CDS version after restart %s, want %s", cds.GetVersionInfo(), last[cdsType].GetVersionInfo())
	}
	c.ack(cds)
	c.request(edsType, last[edsType].GetVersionInfo(), "", []string{"cds_egress_m_blue"}, "")
	eds := c.next()
	if eds.GetVersionInfo() == last[edsType].GetVersionInfo() || len(mustCLA(t, eds).GetEndpoints()[0].GetLbEndpoints()) != 2 {
		t.Fatalf("EDS after restart: version %s (before %s), %v", eds.GetVersionInfo(), last[edsType].GetVersionInfo(), mustCLA(t, eds))
	}
}

// TestTLSAndSigV4Metadata plays the stock App Mesh Envoy image: TLS to the
// xDS server and SigV4 signatures in the stream's metadata, which the
// server passes to Options.Authorize (internal/auth verifies them; here
// there is no hook, as without a credentials file on loopback).
func TestTLSAndSigV4Metadata(t *testing.T) {
	cert, pool := selfSigned(t)
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate, func(o *Options) {
		o.GRPCOptions = []grpc.ServerOption{grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}))}
	})
	sigv4 := metadata.Pairs(
		"authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/appmesh/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123",
		"x-amz-date", "20261122T000000Z",
		"x-amz-security-token", "token",
	)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.NewOutgoingContext(ctx, sigv4), desc, cc, method, opts...)
		}))
	envoyStart(t, c)

	// Without TLS the handshake fails: the listener speaks only TLS.
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	if grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext stream to a TLS listener: %v, want Unavailable", err)
	}
}

// selfSigned makes a certificate for localhost and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// lossyStore is the store with a switch that ends the current watch, as
// the store does when a watcher falls behind, and makes the next Watch
// fail with ErrCompacted once.
type lossyStore struct {
	store.Store
	mu        sync.Mutex
	cancel    context.CancelFunc
	compacted bool
	watches   int
}

func (s *lossyStore) Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches++
	if s.compacted {
		s.compacted = false
		return nil, store.ErrCompacted
	}
	ctx, s.cancel = context.WithCancel(ctx)
	return s.Store.Watch(ctx, prefix, from)
}

func (s *lossyStore) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = true
	s.cancel()
}

// TestWatchLost: the store drops the push loop's watch (and the first
// retry finds history compacted); the loop reads a fresh snapshot and
// carries on. Versions are content hashes, so the proxy is sent nothing for
// the resync itself, and the next write reaches it.
func TestWatchLost(t *testing.T) {
	st := &lossyStore{Store: colorStore(t)}
	var checks atomic.Int64
	srv := startServer(t, st, fakeTranslate, func(o *Options) {
		o.CheckResource = func(m proto.Message, grpc bool) (translate.Facts, error) {
			checks.Add(1)
			return translate.Facts{}, nil
		}
	})
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	envoyStart(t, c)
	n0 := checks.Load()
	if n0 == 0 {
		t.Fatal("no resource checked")
	}
	// A resync that changes nothing checks nothing: red's resources are
	// checked once each, by content; each write below changes one of
	// them (blue's endpoints), and that one is checked. A write while the
	// watch is being re-established is read by the fresh snapshot instead.
	st.drop()
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	eds := c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	if n := len(mustCLA(t, eds).GetEndpoints()[0].GetLbEndpoints()); n != 2 {
		t.Fatalf("EDS has %d endpoints, want 2", n)
	}
	c.ack(eds, "cds_egress_m_blue")
	putInstance(t, st, "blue", "blue-3", "10.0.0.3")
	eds = c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	if n := len(mustCLA(t, eds).GetEndpoints()[0].GetLbEndpoints()); n != 3 {
		t.Fatalf("EDS has %d endpoints, want 3", n)
	}
	if n := checks.Load(); n != n0+2 {
		t.Fatalf("%d resources checked, want %d: red's %d, then one per changed resource", n, n0+2, n0)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.watches < 3 {
		t.Fatalf("%d watches: the loop did not resynchronise through ErrCompacted", st.watches)
	}
}

// TestVirtualGateway: a gateway's Envoy, named by the gateway's ARN, is
// served the gateway's listener, and is refused once it is deleted.
func TestVirtualGateway(t *testing.T) {
	st := colorStore(t)
	gw := ref("m", appmesh.KindVirtualGateway, "", "gw")
	putRaw(t, st, gw, `{"meshName":"m","virtualGatewayName":"gw","spec":{"listeners":[{"portMapping":{"port":9080,"protocol":"http"}}]}}`)
	srv := startServer(t, st, translate.TranslateWith, withChecks)
	c := dialADS(t, srv.addr, envoyNode("arn:aws:appmesh:us-east-1:"+owner+":mesh/m/virtualGateway/gw"))
	c.request(ldsType, "", "", nil, "")
	lds := c.next()
	if got := names(t, lds); !slices.Contains(got, "lds_ingress_0.0.0.0_9080") {
		t.Fatalf("gateway listeners %v, want lds_ingress_0.0.0.0_9080", got)
	}
	c.ack(lds)
	del(t, st, gw.Key())
	if s, _ := grpcstatus.FromError(c.ended()); s.Code() != codes.NotFound {
		t.Fatalf("stream ended with %v, want NotFound", s)
	}
}

// TestTranslatorFailure: a translation that fails (here: panics) keeps
// the proxy on its last configuration and shows the error in its status;
// the next good translation clears it.
func TestTranslatorFailure(t *testing.T) {
	st := colorStore(t)
	tr := func(v *translate.View, id translate.Identity, m *translate.Memo) (*translate.Resources, error) {
		if vn := v.VirtualNodes[id.Name]; vn != nil && len(vn.Spec.Backends) > 1 {
			panic("two backends")
		}
		return fakeTranslate(v, id, m)
	}
	srv := startServer(t, st, tr)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	envoyStart(t, c)
	putService(t, st, "m", "green.local", "blue")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return strings.Contains(p.Error, "two backends") })
	// green.local is served by blue too: the cluster stays, the route
	// table changes.
	putNode(t, st, "m", "red", "green.local")
	expect(t, c.next(), rdsType, "rds_egress_http_80")
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Error == "" })
}
