package httpconn

import (
	"fmt"
	"net/http"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Filter is one HTTP filter of an HTTP connection manager. Filters run in
// the order http_filters lists them, before the router, which is always
// last and is not a Filter: it is the connection manager's own forwarding.
// Tracing, when on, runs first, as Envoy starts its span before any
// filter.
//
// A Filter is built once per configuration and shared by every stream of
// it, concurrently. Per-stream state lives in the slot the stream gives
// each filter.
type Filter interface {
	// DecodeHeaders runs once the request head is read, before routing.
	// It may change the request's headers (they are what the upstream
	// gets) and keep state in *slot. A non-nil LocalReply ends the stream
	// with that response: later filters and the router do not run.
	DecodeHeaders(x Exchange, slot *any) *LocalReply
	// Done runs once the stream ended (response sent or stream reset),
	// in reverse order, for every filter whose DecodeHeaders ran.
	Done(x Exchange, slot any)
}

// LocalReply is a response a filter sends instead of the upstream's.
type LocalReply struct {
	Status  int
	Body    string
	Details string // %RESPONSE_CODE_DETAILS%
}

// FilterFactory builds a Filter from its typed_config; path names the
// filter in errors (an error NACKs the configuration).
type FilterFactory func(cfg *anypb.Any, path string, h HCMInfo) (Filter, error)

// HCMInfo tells a filter factory about the connection manager it is for.
type HCMInfo struct {
	StatPrefix string
	// Egress is true for an outbound connection manager (stat prefix
	// "egress", App Mesh's egress listener), false for ingress.
	Egress bool
	// Tracing is the HCM's tracing block; nil when tracing is off.
	Tracing *hcmv3.HttpConnectionManager_Tracing
}

// Exchange is a filter's read-only view of one stream. Fields about the
// upstream and the response are set by the time Done runs.
type Exchange struct{ s *stream }

// Request is the downstream request.
func (x Exchange) Request() *http.Request { return x.s.in }

// Start is when the request head was read.
func (x Exchange) Start() time.Time { return x.s.start }

// Status is the response status sent downstream; 0 when none was.
func (x Exchange) Status() int {
	if x.s.rw == nil {
		return 0
	}
	return x.s.rw.code
}

// Route is the matched route's name; "" when none matched.
func (x Exchange) Route() string {
	if x.s.rt == nil {
		return ""
	}
	return x.s.rt.Name
}

// Decorator is the matched route's decorator operation; "" when none.
func (x Exchange) Decorator() string {
	if x.s.rt == nil {
		return ""
	}
	return x.s.rt.Decorator
}

// Cluster is the upstream cluster's name; "" when none was chosen.
func (x Exchange) Cluster() string {
	if x.s.cl == nil {
		return ""
	}
	return x.s.cl.Name
}

// UpstreamHost is the last upstream host tried ("ip:port"); "" when none.
func (x Exchange) UpstreamHost() string {
	if x.s.host == nil {
		return ""
	}
	return x.s.host.Addr
}

// Flags are the stream's response flags.
func (x Exchange) Flags() accesslog.Flags { return x.s.allFlags() }

// BytesReceived and BytesSent count body bytes from and to downstream.
func (x Exchange) BytesReceived() int64 { return x.s.rxBytes.Load() }

// BytesSent counts body bytes sent downstream.
func (x Exchange) BytesSent() int64 {
	if x.s.rw == nil {
		return 0
	}
	return x.s.rw.bytes
}

// Downstream is the downstream peer ("ip:port").
func (x Exchange) Downstream() string { return x.s.conn.Src.String() }

// Prepend adds filters ahead of the configured ones (tracing uses it).
// The proxy supplies built-in filters this way; it is not reachable from
// xDS.
type Prepend func(h HCMInfo) ([]Filter, error)

// buildFilters checks http_filters (router last, unknown filters NACKed
// unless optional or disabled) and builds the known ones in order.
func buildFilters(h *hcmv3.HttpConnectionManager, path string, deps Deps, info HCMInfo) ([]Filter, error) {
	var out []Filter
	if deps.Prepend != nil {
		pre, err := deps.Prepend(info)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, pre...)
	}
	fs := h.GetHttpFilters()
	if len(fs) == 0 {
		return nil, fmt.Errorf("%s: http_filters is empty; the router filter is required", path)
	}
	for i, f := range fs {
		fp := strict.Join(path, "http_filters", i)
		if err := strict.Fields(f, fp, "name", "typed_config", "is_optional", "disabled"); err != nil {
			return nil, err
		}
		if isRouter(f) {
			if i != len(fs)-1 {
				return nil, fmt.Errorf("%s: the router filter must be last", fp)
			}
			if err := checkRouter(f, fp); err != nil {
				return nil, err
			}
			continue
		}
		if i == len(fs)-1 {
			return nil, fmt.Errorf("%s: the last http filter must be the router", fp)
		}
		if f.GetDisabled() {
			continue
		}
		name := f.GetName()
		tc := f.GetTypedConfig()
		if tc != nil {
			name = tc.GetTypeUrl()
		}
		factory := deps.Filters[name]
		if factory == nil {
			if f.GetIsOptional() {
				continue // Envoy skips optional filters it does not know
			}
			return nil, fmt.Errorf("%s: http filter %s is not supported by weft proxy", fp, name)
		}
		flt, err := factory(tc, fp, info)
		if err != nil {
			return nil, err
		}
		out = append(out, flt)
	}
	return out, nil
}
