package cluster

import (
	"context"
	"fmt"
	"net"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// buildTLS compiles the cluster's transport socket: an UpstreamTlsContext
// (TLS to every host, health checks included) or raw_buffer.
func (c *Cluster) buildTLS(pb *clusterv3.Cluster, path string, st *stats.Store, ts *tlsctx.Store) error {
	tp := path + ".transport_socket"
	m, err := tlsctx.Unpack(pb.GetTransportSocket(), tp)
	if err != nil || m == nil {
		return err
	}
	u, ok := m.(*tlsv3.UpstreamTlsContext)
	if !ok {
		return fmt.Errorf("%s.typed_config: a cluster takes an UpstreamTlsContext", tp)
	}
	if ts == nil {
		return fmt.Errorf("%s: TLS is not available here", tp)
	}
	sc := st.Scope("cluster."+pb.GetName()+".ssl.", "envoy_cluster_ssl_", stats.Label{Name: "envoy_cluster_name", Value: pb.GetName()})
	c.TLS, err = ts.Client(u, tp+".typed_config", tlsctx.NewStats(sc))
	return err
}

// dialHC opens a health check connection: TCP, then TLS when the cluster
// has it, as Envoy's health checkers use the cluster's transport socket.
func (c *Cluster) dialHC(ctx context.Context, addr string, alpn tlsctx.ALPN) (net.Conn, error) {
	d := net.Dialer{Timeout: c.ConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || c.TLS == nil {
		return conn, err
	}
	tc, err := c.TLS.Handshake(ctx, conn, alpn)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}
