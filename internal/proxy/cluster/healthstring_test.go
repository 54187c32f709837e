package cluster

import "testing"

// TestHealthStringAsEnvoy: a host's /clusters health_flags are its flags'
// names joined with nothing between them, in the order of Envoy's
// HealthFlag enum (HostUtility::healthFlagsToString), so that a DRAINING
// host still pending its first active check reads
// /pending_active_hc/eds_status_draining as in Envoy 1.34. weft joined
// them with '|' and put pending_active_hc second.
func TestHealthStringAsEnvoy(t *testing.T) {
	for _, tc := range []struct {
		flags uint32
		want  string
	}{
		{0, "healthy"},
		{edsDraining, "/eds_status_draining"},
		{pendingActiveHC | edsDraining, "/pending_active_hc/eds_status_draining"},
		{failedActiveHC | pendingActiveHC, "/failed_active_hc/pending_active_hc"},
		{failedActiveHC | pendingActiveHC | edsUnhealthy | outlierEjected | edsDraining,
			"/failed_active_hc/failed_outlier_check/failed_eds_health/pending_active_hc/eds_status_draining"},
	} {
		var h Host
		h.flags.Store(tc.flags)
		if got := h.HealthString(); got != tc.want {
			t.Errorf("flags %b: health_flags %q; want %q", tc.flags, got, tc.want)
		}
	}
}
