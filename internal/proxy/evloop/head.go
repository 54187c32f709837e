package evloop

// headView shows a parsed request head to route.Config.MatchHead. An h2c
// upgrade's lines that are gone show as lines without a name, which no
// matcher names, and what is left of its Connection header as one more
// line after the head's: the header the goroutine path routes on
// (proxyroute.StripH2C).
type headView struct {
	b []byte // the buffer the head was parsed from
	r *request
}

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
