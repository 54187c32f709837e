package evloop

import proxyroute "github.com/weftmesh/weft/internal/proxy/route"

// headView shows a parsed request head to route.Config.MatchHead. An h2c
// upgrade's lines that are gone show as lines without a name, which no
// matcher names, and what is left of its Connection header as one more
// line after the head's: the header the goroutine path routes on
// (proxyroute.StripH2C).
type headView struct {
	b      []byte // the buffer the head was parsed from
	r      *request
	scheme string // the request's :scheme (requestScheme)
}

func (h *headView) Scheme() string { return h.scheme }

func (h *headView) Method() []byte { return h.r.method.of(h.b) }
func (h *headView) Target() []byte { return h.r.target.of(h.b) }

func (h *headView) NumHeaders() int {
	if len(h.r.h2cConn) > 0 {
		return len(h.r.lines) + 1
	}
	return len(h.r.lines)
}

func (h *headView) Host() []byte {
	if !h.r.hasHost {
		return nil
	}
	return h.r.host.of(h.b)
}

func (h *headView) Header(i int) (name, value []byte) {
	if i == len(h.r.lines) {
		return connectionName, h.r.h2cConn
	}
	l := &h.r.lines[i]
	if l.gone {
		return nil, nil
	}
	return l.name.of(h.b), l.value.of(h.b)
}

// connectionName names the Connection header an h2c upgrade keeps; never
// modified.
var connectionName = []byte("Connection")

// h1Scheme is the :scheme of an HTTP/1.1 request read from head, on a TLS
// connection when tls, as Envoy's connection manager gives it
// (proxyroute.H1Scheme): its x-forwarded-proto's when valid, else the
// connection's. The loops serve no use_remote_address, and only
// origin-form targets (parse hands the others off).
func (r *request) h1Scheme(head []byte, tls bool) string {
	var xfp []byte
	n := 0
	if r.hasXFP {
		for i := range r.lines {
			if h := &r.lines[i]; equalFold(h.name.of(head), "x-forwarded-proto") {
				if n == 0 {
					xfp = h.value.of(head)
				}
				n++
			}
		}
	}
	return proxyroute.H1Scheme("", xfp, n, tls)
}
