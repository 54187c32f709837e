package evloop

// headView shows a parsed request head to route.Config.MatchHead.
type headView struct {
	b []byte // the buffer the head was parsed from
	r *request
}

func (h *headView) Method() []byte  { return h.r.method.of(h.b) }
func (h *headView) Target() []byte  { return h.r.target.of(h.b) }
func (h *headView) NumHeaders() int { return len(h.r.lines) }

func (h *headView) Host() []byte {
	if !h.r.hasHost {
		return nil
	}
	return h.r.host.of(h.b)
}

func (h *headView) Header(i int) (name, value []byte) {
	l := &h.r.lines[i]
	return l.name.of(h.b), l.value.of(h.b)
}
