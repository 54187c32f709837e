package evloop

import "sync/atomic"

// NewChain makes what the loops serve a filter chain's connections with,
// for Config.Classify to name. Its stats are counted under
// http.<StatPrefix>.* of the Server's store from the start.
func (s *Server) NewChain(c ChainConfig) *Chain {
	g := &generation{router: c.Router, st: newCounters(s.cfg.Stats, c.StatPrefix, nil), tls: c.TLS,
		headers: s.cfg.HeadersTimeout, idle: s.cfg.IdleTimeout, streamIdle: s.cfg.StreamIdleTimeout, flush: s.cfg.StreamFlushTimeout,
		http10: c.AcceptHTTP10, limits: c.Limits, retired: new(atomic.Bool)}
	if c.Continues != nil {
		g.retired = c.Continues.g.retired
	}
	if c.HeadersTimeout > 0 {
		g.headers = c.HeadersTimeout
	}
	if c.IdleTimeout > 0 {
		g.idle = c.IdleTimeout
	}
	if c.StreamIdleTimeout > 0 {
		g.streamIdle = c.StreamIdleTimeout
	}
	switch {
	case c.StreamFlushTimeout > 0:
		g.flush = c.StreamFlushTimeout
	case c.StreamIdleTimeout > 0:
		g.flush = c.StreamIdleTimeout // as Envoy, unless set
	}
	return &Chain{g}
}

// Retire drains the connections the loops serve with chains (a listener
// update changed or removed them): each closes once its response in
// flight is written, at once when it has none. Connections accepted with
// them later (classified before the update) drain as they are accepted.
func (s *Server) Retire(chains ...*Chain) {
	if len(chains) == 0 {
		return
	}
	for _, c := range chains {
		c.g.retired.Store(true)
	}
	s.retireGen.Add(1)
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for _, l := range s.running {
		l.wakeUp()
	}
}
