package route

import (
	"fmt"
	"math"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// H2Windows are the HTTP/2 flow-control windows weft proxy gives a peer:
// a client (the connection manager's http2_protocol_options) or an
// upstream (the cluster's). Both paths apply them: the loops advertise
// and enforce them themselves (evloop's h2conn and h2up), the goroutine
// path through x/net's Server (MaxUploadBufferPerStream and
// PerConnection) and Transport (net/http's HTTP2Config.MaxReceiveBuffer
// fields, cluster/transport.go).
type H2Windows struct {
	// Stream is SETTINGS_INITIAL_WINDOW_SIZE: what the peer may send on
	// a stream before weft credits it back.
	Stream uint32
	// Conn is the connection's window, raised from RFC 9113's 65,535 by
	// a WINDOW_UPDATE right after the SETTINGS.
	Conn uint32
}

const (
	// DefaultH2StreamWindow is weft's stream window when
	// initial_stream_window_size is unset: x/net's server's 1 MiB, the
	// loops' since round 32. A stream moves at most a window per round
	// trip (65,535 capped one near 6.5 MB/s at 10 ms, docs/bench/proxy.md,
	// "Round 32: HTTP/2 windows across a delayed link").
	DefaultH2StreamWindow = 1 << 20
	// DefaultH2ConnWindow is weft's connection window when
	// initial_connection_window_size is unset: four stream windows.
	// Toward a client the connection's window is credited only as bytes
	// are passed on, so it bounds what a client connection makes weft
	// hold of request bodies (4 MiB); a stream whose upstream takes
	// nothing holds at most a stream window of it, so three such streams
	// leave the others a stream window still, where a connection window
	// equal to the stream window (round 32) let one stall every upload on
	// the connection. Envoy's default (256 MiB each) would let a client
	// make weft hold 256 MiB per stream.
	DefaultH2ConnWindow = 4 << 20
	// h2MinWindow and h2MaxWindow are Envoy's bounds on both fields
	// (protocol.proto's validate rules): RFC 9113's initial window, as
	// windows can only grow from it, and its largest.
	h2MinWindow = 65535
	h2MaxWindow = math.MaxInt32
)

// DefaultH2Windows are weft's windows for a peer whose options set none.
var DefaultH2Windows = H2Windows{Stream: DefaultH2StreamWindow, Conn: DefaultH2ConnWindow}

// OrDefault is w with weft's window (DefaultH2Windows) for each field
// that is zero (unset).
func (w H2Windows) OrDefault() H2Windows {
	if w.Stream == 0 {
		w.Stream = DefaultH2StreamWindow
	}
	if w.Conn == 0 {
		w.Conn = DefaultH2ConnWindow
	}
	return w
}

// H2WindowsOf reads initial_stream_window_size and
// initial_connection_window_size from o (nil: neither set), zero for
// each unset: the loops give weft's window for it (OrDefault), the
// goroutine path's Transport x/net's (cluster's newH2Transport), whose
// connection window is credited only as responses are read and must not
// shrink to weft's because the stream's is set. path names o in an
// error, which says a value is outside Envoy's range, [65535,
// 2147483647].
func H2WindowsOf(o *corev3.Http2ProtocolOptions, path string) (H2Windows, error) {
	var w H2Windows
	for _, f := range []struct {
		name string
		v    *wrapperspb.UInt32Value
		to   *uint32
	}{
		{"initial_stream_window_size", o.GetInitialStreamWindowSize(), &w.Stream},
		{"initial_connection_window_size", o.GetInitialConnectionWindowSize(), &w.Conn},
	} {
		if f.v == nil {
			continue
		}
		if v := f.v.GetValue(); v < h2MinWindow || v > h2MaxWindow {
			return H2Windows{}, fmt.Errorf("%s.%s: %d is outside [%d, %d]", path, f.name, v, h2MinWindow, h2MaxWindow)
		}
		*f.to = f.v.GetValue()
	}
	return w, nil
}
