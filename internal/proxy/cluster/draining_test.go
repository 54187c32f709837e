package cluster

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestDrainingExcludedFromPanic: a host EDS marks DRAINING is left out of
// the panic threshold's count and picked only in panic, as Envoy's
// excluded hosts (isHostSetInPanic divides by the hosts less the
// excluded; a panic picks from all hosts). Each case: the statuses, and
// how many of 60 picks go to each host (round robin).
func TestDrainingExcludedFromPanic(t *testing.T) {
	const (
		H = corev3.HealthStatus_HEALTHY
		U = corev3.HealthStatus_UNHEALTHY
		D = corev3.HealthStatus_DRAINING
	)
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}
	for _, tc := range []struct {
		name   string
		status []corev3.HealthStatus
		want   []int
		panics bool
	}{
		// 1 of 2 counted is healthy (50%): no panic; 1 of 4 would be.
		{"half of those counted", []corev3.HealthStatus{H, U, D, D}, []int{60, 0, 0, 0}, false},
		// 1 of 3 counted (33%): a panic, over every host, DRAINING too.
		{"panic", []corev3.HealthStatus{H, U, U, D}, []int{15, 15, 15, 15}, true},
		// None counted: 0%, a panic over all of them.
		{"all draining", []corev3.HealthStatus{D, D, D, D}, []int{15, 15, 15, 15}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster(t, nil)
			la := assignmentOf("e", addrs...)
			for i, ep := range la.GetEndpoints()[0].GetLbEndpoints() {
				ep.HealthStatus = tc.status[i]
			}
			if err := c.setEndpoints(la); err != nil {
				t.Fatal(err)
			}
			got := make([]int, len(addrs))
			for range 60 {
				h, err := c.Pick(nil, 1)
				if err != nil {
					t.Fatal(err)
				}
				for i, a := range addrs {
					if h.Addr == a {
						got[i]++
					}
				}
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("picks %v; want %v", got, tc.want)
				}
			}
			if p := c.Stats.LbHealthyPanic.Value() > 0; p != tc.panics {
				t.Errorf("lb_healthy_panic counted %v; want %v", p, tc.panics)
			}
		})
	}
}
