package xdsclient

import "google.golang.org/grpc"

// The receive windows weft proxy's xDS connection keeps, fixed.
//
// Why fixed: grpc-go's default flow control estimates the link's
// bandwidth-delay product by sending the server a PING after each burst
// of data it receives, which for an xDS client is one PING per response
// pushed; the server reads it and writes a PING ACK, a read and a write
// per push and proxy (docs/bench/xds.md, round 9: 38-53 µs of server CPU
// per pushed proxy with a fixed window against 48-71 µs with grpc-go's
// default). Envoy keeps a fixed window and sends no such PING; so does
// weft proxy now.
//
// Why 16 MiB: it is the most grpc-go's estimation ever grows a window to,
// so no link gets a smaller window than the default client would reach.
// Envoy's defaults are larger (256 MiB per stream and per connection,
// Http2ProtocolOptions), but a window is only the bytes the server may
// send before the proxy reads them, and an xDS response is a few hundred
// bytes to a few MiB; the one response above 16 MiB (the client accepts
// up to 64 MiB) still arrives whole, as grpc-go widens a stream's window
// for a message it is reading.
const (
	streamWindow = 16 << 20 // bytes, per stream
	connWindow   = 16 << 20 // bytes, per connection
)

// WindowOptions are the dial options that fix the flow-control windows of
// an xDS connection as weft proxy's client does; bench/xdsbench dials the
// simulated proxies with them.
func WindowOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(streamWindow), grpc.WithStaticConnWindowSize(connWindow)}
}
