package evloop

import (
	"net/netip"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// Access logs on the loops: a Router whose connection manager writes
// access logs implements AccessLogger, and the loops give it a record of
// each request they answered, with the request's and the response's
// heads as they crossed the proxy, so that it can build the same entry
// (and the same line) as the goroutine path. A connection keeps the
// buffers of its records; a listener without access logs pays one type
// assertion per request.

// AccessLogger is implemented by a Router whose requests are logged.
type AccessLogger interface {
	// Log is called on the loop once a request is answered, or its
	// connection ended it; r's slices are valid until Log returns. It
	// must not keep r.
	Log(r *LogRecord)
}

// HeaderField is one header line of a LogRecord's head: the name as
// received, the value without the whitespace around it.
type HeaderField struct{ Name, Value []byte }

// LogRecord is what the loops know of a request when it is done.
type LogRecord struct {
	// Start is the wall clock when the request's head was read.
	Start            time.Time
	Duration         time.Duration
	ResponseDuration time.Duration // to the response head; -1 when none was sent
	// Head is the request head as received; empty, with Method, Target
	// and Headers, for a head the loops refused (Envoy logs those without
	// request headers).
	Head []byte
	// Method, Target and Headers are Head as the loop parsed it (slices
	// of Head): the log reads them without parsing the head again.
	Method, Target []byte
	Headers        []HeaderField
	Scheme         string // its :scheme as its connection manager gave it (proxyroute.Head.Scheme); "" for a refused head
	RequestID      []byte // the x-request-id the proxy added; nil when the client sent one
	// Path, OriginalPath and Authority are the normalised path and the
	// route's rewrites as the upstream got them (Target's; Path "" when
	// the request's path went as received), empty when none: Envoy's
	// connection manager and router rewrite the request's headers in
	// place, and its access log reads them.
	Path, OriginalPath, Authority string
	// HeaderOps are the route's request header mutations (Target.Headers;
	// nil: none): the log reads the request's headers as they leave them,
	// as Envoy's router makes them in place too.
	HeaderOps *proxyroute.RequestMutations
	// ResponseHead is the final response head as sent; nil when none
	// was. An HTTP/2 stream's is written as an HTTP/1.1 head would be
	// ("HTTP/2 200", then a line per field as sent).
	ResponseHead []byte
	// HTTP2: the request came as an HTTP/2 stream (Head is the HTTP/1.1
	// head the loop built from its HEADERS for routing).
	HTTP2   bool
	Code    int // the response's status; 0 when none was sent
	Flags   accesslog.Flags
	Details string // %RESPONSE_CODE_DETAILS%: a local reply's, or via_upstream, as the goroutine path's
	// UpstreamFailure is %UPSTREAM_TRANSPORT_FAILURE_REASON%: the
	// transport failure reason of the last attempt's connection, when it
	// failed before it was up (proxyroute.ConnectFailure.Transport).
	UpstreamFailure string
	// BytesReceived and BytesSent count the bodies.
	BytesReceived, BytesSent int64
	Cluster                  string
	Route                    string         // Target.Route
	Host                     netip.AddrPort // the last attempt's; zero when none
	Attempts                 int
	Remote, Local            netip.AddrPort
	// RemoteText and LocalText are Remote and Local as ip:port, made
	// once per connection.
	RemoteText, LocalText string
	ConnectionID          uint64 // %CONNECTION_ID%: from Config.ConnIDs, once per connection
}
