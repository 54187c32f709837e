package cluster

import (
	"context"
	"errors"
	"net/http"
	"net/textproto"

	"github.com/weftmesh/weft/internal/proxy/route"
)

type interimKey struct{}

// WithInterim returns ctx carrying got, which the HTTP/1.1 client calls,
// on the goroutine reading the response, with the status of each 1xx
// response head but 101 it reads before the final one and takes: one
// that frames a body (route.BodylessFramed) is the upstream's
// ProtocolError instead, and got does not hear of it, as Envoy's codec
// refuses such a head before its router sees it. The HTTP/2 client
// (x/net's) tells its 1xx heads through httptrace's Got1xxResponse.
func WithInterim(ctx context.Context, got func(status int)) context.Context {
	return context.WithValue(ctx, interimKey{}, got)
}

func interimOf(ctx context.Context) func(int) {
	f, _ := ctx.Value(interimKey{}).(func(int))
	return f
}

var errBodylessFramed = errors.New("a 1xx or 204 response head with Transfer-Encoding or a Content-Length other than 0")

// framingError checks an HTTP/1.1 response head of status, as net/http
// read it, by route.BodylessFramed: its ProtocolError, or nil. net/http
// keeps a Transfer-Encoding in te (it takes none but chunked) and merges
// identical Content-Length lines into one. A head taken loses its
// "Content-Length: 0", as Envoy's codec removes it.
func framingError(status int, te bool, h textproto.MIMEHeader) error {
	cl := h["Content-Length"]
	first := ""
	if len(cl) > 0 {
		first = cl[0]
	}
	if route.BodylessFramed(status, te, len(cl) > 0, first) {
		return &ProtocolError{errBodylessFramed}
	}
	if len(cl) > 0 && route.DropsLength(status) {
		delete(h, "Content-Length")
	}
	return nil
}

// responseFramingError is framingError for a response net/http read.
func responseFramingError(resp *http.Response) error {
	return framingError(resp.StatusCode, resp.TransferEncoding != nil, textproto.MIMEHeader(resp.Header))
}
