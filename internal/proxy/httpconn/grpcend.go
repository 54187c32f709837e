package httpconn

// The count of a gRPC response whose head left its host's count to its
// end (cluster.Cluster.ResponseHead): upstreamBody tells it of the end.

import (
	"net/http"

	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// grpcEnd is what the end of a gRPC response whose head left its host's
// count to it (cluster.Cluster.ResponseHead) is counted with.
type grpcEnd struct {
	host *cluster.Host
	resp *http.Response
	head int // the head's grpc-status (route.GRPCStatus)
	// trailers: resp's are read. An HTTP/1.1 upstream's are not, as
	// Envoy's HTTP/1.1 codec drops them (the loops too).
	trailers bool
	body     bool // a body byte came
}

// grpcDone counts the gRPC response's end on its host, once: status is
// its trailers' grpc-status, or route.NoGRPCStatus.
func (b *upstreamBody) grpcDone(status int) {
	if g := b.grpc; g != nil {
		b.grpc = nil
		g.host.GRPCDone(status)
	}
}

// grpcEnded counts the gRPC response's end once its body has ended
// (EOF): by its trailers' grpc-status. x/net's client gives a HEADERS
// with END_STREAM and a content-length of 0 as a length of 0 with that
// field (cluster.HeadEnded cannot tell it from a body yet to end): a
// response that ends so, with a grpc-status in its head, no byte of body
// and no trailers, counts by the head's status, as its head ended it.
func (b *upstreamBody) grpcEnded() {
	g := b.grpc
	status := route.NoGRPCStatus
	if g.trailers {
		status = route.GRPCStatus(g.resp.Trailer.Get("Grpc-Status"))
	}
	if status == route.NoGRPCStatus && !g.body && g.resp.ContentLength == 0 && len(g.resp.Trailer) == 0 {
		status = g.head
	}
	b.grpcDone(status)
}
