// Package accesslog formats and writes weft proxy's access logs as Envoy
// does: its default format, text formats and JSON formats built from the
// %...% command operators, to a file path, /dev/stdout or /dev/stderr.
//
// The HTTP and TCP handlers fill an Entry per request or connection; a
// Logger compiled from an AccessLog config formats it and appends one line
// to its Sink.
package accesslog

import (
	"net/http"
	"strings"
	"time"
)

// Flags are Envoy's response flags (%RESPONSE_FLAGS%).
type Flags uint32

// The response flags weft proxy sets.
const (
	FailedLocalHealthCheck          Flags = 1 << iota // LH
	NoHealthyUpstream                                 // UH
	UpstreamRequestTimeout                            // UT
	LocalReset                                        // LR
	UpstreamRemoteReset                               // UR
	UpstreamConnectionFailure                         // UF
	UpstreamConnectionTermination                     // UC
	UpstreamOverflow                                  // UO
	NoRouteFound                                      // NR
	DelayInjected                                     // DI
	FaultInjected                                     // FI
	RateLimited                                       // RL
	DownstreamConnectionTermination                   // DC
	UpstreamRetryLimitExceeded                        // URX
	StreamIdleTimeout                                 // SI
	DurationTimeout                                   // DT
	NoClusterFound                                    // NC
	NoFilterConfigFound                               // NFCF
	DownstreamProtocolError                           // DPE
	UpstreamProtocolError                             // UPE
)

// Short and long names in Envoy's order of precedence when printed.
var flagNames = [...]struct {
	f           Flags
	short, long string
}{
	{FailedLocalHealthCheck, "LH", "FailedLocalHealthCheck"},
	{NoHealthyUpstream, "UH", "NoHealthyUpstream"},
	{UpstreamRequestTimeout, "UT", "UpstreamRequestTimeout"},
	{LocalReset, "LR", "LocalReset"},
	{UpstreamRemoteReset, "UR", "UpstreamRemoteReset"},
	{UpstreamConnectionFailure, "UF", "UpstreamConnectionFailure"},
	{UpstreamConnectionTermination, "UC", "UpstreamConnectionTermination"},
	{UpstreamOverflow, "UO", "UpstreamOverflow"},
	{NoRouteFound, "NR", "NoRouteFound"},
	{DelayInjected, "DI", "DelayInjected"},
	{FaultInjected, "FI", "FaultInjected"},
	{RateLimited, "RL", "RateLimited"},
	{DownstreamConnectionTermination, "DC", "DownstreamConnectionTermination"},
	{UpstreamRetryLimitExceeded, "URX", "UpstreamRetryLimitExceeded"},
	{StreamIdleTimeout, "SI", "StreamIdleTimeout"},
	{DurationTimeout, "DT", "DurationTimeout"},
	{NoClusterFound, "NC", "NoClusterFound"},
	{NoFilterConfigFound, "NFCF", "NoFilterConfigFound"},
	{DownstreamProtocolError, "DPE", "DownstreamProtocolError"},
	{UpstreamProtocolError, "UPE", "UpstreamProtocolError"},
}

// String is the %RESPONSE_FLAGS% rendering: comma-separated short names,
// or "-" when none is set.
func (f Flags) String() string { return f.render(false) }

// Long is the %RESPONSE_FLAGS_LONG% rendering.
func (f Flags) Long() string { return f.render(true) }

func (f Flags) render(long bool) string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for _, n := range flagNames {
		if f&n.f == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if long {
			b.WriteString(n.long)
		} else {
			b.WriteString(n.short)
		}
	}
	return b.String()
}

// Entry is what one HTTP request or one TCP connection leaves for the access
// log. The handler that owns the request fills it; it is read only after the
// request is done.
type Entry struct {
	Start    time.Time
	Duration time.Duration // whole request or connection
	// RequestDuration is from start to the end of the downstream request;
	// ResponseDuration from start to the first upstream response byte;
	// negative when unknown.
	RequestDuration, ResponseDuration time.Duration

	// HTTP only: Request, or Head (the event loops' requests, read
	// without net/http); neither means a TCP connection.
	Request         *http.Request // downstream request as received (not modified)
	Head            RequestHead
	Scheme          string // its :scheme as its connection manager gave it (route.Head.Scheme); "" for a refused head
	Protocol        string // HTTP/1.1, HTTP/2
	ResponseCode    int    // 0 when no response was sent
	ResponseHeader  Header // nil when none was sent
	ResponseTrailer Header
	CodeDetails     string
	RouteName       string

	Flags         Flags
	BytesReceived int64
	BytesSent     int64

	UpstreamHost         string // ip:port of the last attempt
	UpstreamCluster      string
	UpstreamLocalAddress string
	UpstreamFailure      string // %UPSTREAM_TRANSPORT_FAILURE_REASON%, as Envoy's stream info holds it (spaces kept)
	Attempts             int

	DownstreamRemote     string // ip:port
	DownstreamLocal      string // ip:port, after original-destination recovery
	DownstreamDirectPeer string
	ServerName           string // SNI
	ConnectionID         uint64
}

// RequestHead is a request read without net/http (the event loops'
// records). Each method gives what the http.Request net/http reads from
// the same bytes would: the formats print the same line for both.
type RequestHead interface {
	Method() string
	RequestURI() string // as URL.RequestURI
	Host() string
	// Header is the first value of the header name (any case), as
	// Header.Get of the request net/http reads.
	Header(name string) string
}

// Header is response headers or trailers; http.Header is one.
type Header interface {
	Get(name string) string
}
