package proxy

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// claZones is cla with each address in its own locality, of zones[i].
func claZones(name string, addrs, zones []string) *endpointv3.ClusterLoadAssignment {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for i, a := range addrs {
		one := cla(name, a).Endpoints[0]
		one.Locality = &corev3.Locality{Zone: zones[i]}
		la.Endpoints = append(la.Endpoints, one)
	}
	return la
}

// TestReplacedHostDrainedSamePaths: a host that an update replaces by a
// new one at the same address has its connections drained as a removed
// host's, on every path, as Envoy's workers drain the pools of the host
// object removed (ThreadLocalClusterManagerImpl::removeHosts: "if a host
// is readded it will be a different physical HostSharedPtr"): a host
// moved to another locality (a new host, hostsFromCLA, as Envoy's
// updateDynamicHostList makes one) has its idle connection closed, while
// the other host keeps its own; a host removed and added again while its
// connection serves a response has that connection closed after the
// response, not reused. Every path went by address: the moved host kept
// its connections, and the goroutine path's HTTP/1.1 pool took back the
// connection of the host added again (the loops dropped its pool at the
// removal).
func TestReplacedHostDrainedSamePaths(t *testing.T) {
	for _, up := range []struct {
		name string
		h2   bool
	}{
		{"HTTP/1.1 upstream", false},
		{"HTTP/2 upstream", true},
	} {
		var mods []func(*clusterv3.Cluster)
		if up.h2 {
			mods = append(mods, h2Upstream)
		}
		t.Run(up.name+", moved to another locality", func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					moved, stays := newClosingUpstream(t, up.h2, nil), newClosingUpstream(t, up.h2, nil)
					h := newHarness(t, p.on)
					base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c", mods...)}
					addrs := []string{moved.addr, stays.addr}
					h.push(append(base, claZones("c", addrs, []string{"a", "a"}))...)
					url := "http://" + h.addr("egress") + "/x"
					c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
					defer c.Transport.(*http.Transport).CloseIdleConnections()
					waitUntil(t, 10*time.Second, "a connection to each host", func() bool {
						getOK(t, c, url, "ok")
						a, _ := moved.counts()
						b, _ := stays.counts()
						return a > 0 && b > 0
					})
					openStays, acceptedStays := stays.counts()
					_, acceptedMoved := moved.counts()
					h.push(append(base, claZones("c", addrs, []string{"b", "a"}))...)
					waitUntil(t, 20*time.Second, "the moved host's connections closed by the proxy", func() bool {
						open, _ := moved.counts()
						return open == 0
					})
					waitUntil(t, 10*time.Second, fmt.Sprintf("upstream_cx_active back to the other host's %d", openStays), func() bool {
						return h.stat("cluster.c.upstream_cx_active") == int64(openStays)
					})
					waitUntil(t, 10*time.Second, "a new connection to the moved host", func() bool {
						getOK(t, c, url, "ok")
						_, accepted := moved.counts()
						return accepted > acceptedMoved
					})
					if open, accepted := stays.counts(); open != openStays || accepted != acceptedStays {
						t.Errorf("the host that stays: %d connections open, %d accepted; want %d and %d, kept and reused",
							open, accepted, openStays, acceptedStays)
					}
				})
			}
		})
		t.Run(up.name+", added again while busy", func(t *testing.T) {
			for _, p := range proxyPaths() {
				t.Run(p.name, func(t *testing.T) {
					started, release := make(chan struct{}, 1), make(chan struct{})
					again := newClosingUpstreamWith(t, up.h2, nil, heldHalfway(started, release))
					stays := newClosingUpstream(t, up.h2, nil)
					h := newHarness(t, p.on)
					base := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c", mods...)}
					h.push(append(base, cla("c", again.addr))...)
					url := "http://" + h.addr("egress") + "/x"
					c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
					defer c.Transport.(*http.Transport).CloseIdleConnections()
					slow := slowGet(t, c, url, started)
					h.push(append(base, cla("c", stays.addr))...)
					h.push(append(base, cla("c", again.addr, stays.addr))...)
					close(release)
					if a, err := slow(); err != nil || a != "200 first half, second half" {
						t.Fatalf("the response in flight: %q, %v; want 200 and its whole body", a, err)
					}
					awaitOnlyStays(t, h, again, stays, "the replaced host")
				})
			}
		})
	}
}
