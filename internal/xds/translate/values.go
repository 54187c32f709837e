package translate

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// App Mesh's silent defaults (reference §2.2, §2.3, §2.5).
const (
	defaultRouteTimeoutMs  = 15000      // per-request timeout of every route
	wideOpen               = 2147483647 // circuit breaker thresholds: effectively off
	defaultRetries         = 2          // the default retry policy's max retries
	localConnectTimeoutMs  = 250        // local app and self-redirect clusters
	egressConnectTimeoutMs = 1000       // clusters of other virtual nodes
	noPriority             = 1001       // sorts routes without a priority after 0..1000
)

// ms is a duration in milliseconds. durationpb.New would need package time,
// which the translator keeps out of its imports.
func ms(v int64) *durationpb.Duration {
	return &durationpb.Duration{Seconds: v / 1000, Nanos: int32(v%1000) * 1e6}
}

// millis converts an App Mesh duration; ok is false when it is unset.
func millis(d *appmesh.Duration) (int64, bool) {
	if d == nil || d.Value == nil {
		return 0, false
	}
	if d.Unit == appmesh.DurationUnitS {
		return *d.Value * 1000, true
	}
	return *d.Value, true
}

// durationOr converts an App Mesh duration, or returns def milliseconds.
func durationOr(d *appmesh.Duration, def int64) *durationpb.Duration {
	if v, ok := millis(d); ok {
		return ms(v)
	}
	return ms(def)
}

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// u32of converts an optional App Mesh integer, or returns def.
func u32of(v *int64, def uint32) *wrapperspb.UInt32Value {
	if v == nil || *v < 0 {
		return u32(def)
	}
	return u32(clampU32(*v))
}

func clampU32(v int64) uint32 {
	switch {
	case v < 0:
		return 0
	case v > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(v)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func i64(p *int64) (int64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

func boolean(p *bool) bool { return p != nil && *p }
