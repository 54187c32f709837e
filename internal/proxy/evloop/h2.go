package evloop

import (
	"time"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// H2Router is a Router that tells, at each h2c connection's preface,
// whether the loops may serve that connection's streams (ok): every route
// of the listener is one they forward as the goroutine path would, to a
// cluster spoken to over HTTP/1.1; and with which limits.
//
// RouteH2 routes a stream's request as Route does, but cannot hand it
// off: what Route hands off for the goroutine path to answer (no route,
// say) it answers itself when it can. A HandOff left is answered
// REFUSED_STREAM, with GOAWAY, when H2 refuses by then (an update since
// the preface: the client retries on a new connection, which the
// goroutine path takes), else 501.
type H2Router interface {
	Router
	H2() (s H2Settings, ok bool)
	RouteH2(h proxyroute.Head) Target
}

// H2Settings are the connection manager's HTTP/2 limits, as the
// goroutine path applies them.
type H2Settings struct {
	// MaxStreams and MaxHeaderList are SETTINGS_MAX_CONCURRENT_STREAMS
	// and SETTINGS_MAX_HEADER_LIST_SIZE.
	MaxStreams, MaxHeaderList uint32
	// TooManyResets is the premature-reset verdict (rapid reset,
	// CVE-2023-44487) for a connection whose streams ended ended times,
	// premature of them reset by the client within ResetLifetime of
	// their start: the connection goes away (GOAWAY NO_ERROR, counted as
	// downstream_rq_too_many_premature_resets).
	TooManyResets func(ended, premature int64) bool
	ResetLifetime time.Duration
	// Windows are the flow-control windows the connection gives the
	// client (http2_protocol_options'); zero: route.DefaultH2Windows.
	Windows proxyroute.H2Windows
}
