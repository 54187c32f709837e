package stats

// HistogramValue returns a snapshot of the histogram with the Envoy name,
// and whether it exists.
func (s *Store) HistogramValue(name string) (HistogramSnapshot, bool) {
	s.mu.Lock()
	h, ok := s.h[name]
	s.mu.Unlock()
	if !ok {
		return HistogramSnapshot{}, false
	}
	return h.snapshot(), true
}
