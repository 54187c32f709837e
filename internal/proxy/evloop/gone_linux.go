package evloop

import "net/netip"

// Hosts gone from their cluster (an EDS update removed them, or their
// cluster went): each loop drops its pools of them on its own goroutine,
// as Envoy's workers drain a removed host's connection pools
// (ThreadLocalClusterManagerImpl::removeHosts, drainOrCloseConnPools
// with DrainBehavior::DrainAndDelete): idle connections close at once,
// a busy HTTP/1.1 one when its exchange ends (not reused), an HTTP/2
// one takes no new stream and closes after its last (dropPool). A host
// added again later gets a new pool.

// hostsGone posts hosts of cluster to every running loop
// (HostsWatcher's gone); safe from any goroutine, and does not block on
// the loops.
func (s *Server) hostsGone(cluster string, hosts []netip.AddrPort) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for _, l := range s.running {
		l.postGone(cluster, hosts)
	}
}

// postGone queues hosts of cluster for the loop and wakes it. Called
// under the Server's rmu, while the loop is running (Serve empties
// running, under rmu, before closeAll closes the eventfd).
func (l *loop) postGone(cluster string, hosts []netip.AddrPort) {
	l.goneMu.Lock()
	for _, h := range hosts {
		l.gone = append(l.gone, hostKey{cluster, h})
	}
	l.goneMu.Unlock()
	l.wakeUp()
}

// takeGone drops the loop's pools of the hosts posted gone.
func (l *loop) takeGone() {
	l.goneMu.Lock()
	gone := l.gone
	l.gone = nil
	l.goneMu.Unlock()
	for _, k := range gone {
		if p := l.hpools[k]; p != nil {
			l.dropPool(k, p)
		}
	}
}
