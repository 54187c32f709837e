package route

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// RetryOn is a set of Envoy retry conditions.
type RetryOn uint32

// Retry conditions (x-envoy-retry-on and x-envoy-retry-grpc-on values).
const (
	On5xx RetryOn = 1 << iota
	OnGatewayError
	OnReset
	OnConnectFailure
	OnRefusedStream
	OnRetriableStatusCodes
	OnRetriable4xx
	OnGRPCCancelled
	OnGRPCDeadlineExceeded
	OnGRPCInternal
	OnGRPCResourceExhausted
	OnGRPCUnavailable
)

var retryNames = map[string]RetryOn{
	"5xx":                    On5xx,
	"gateway-error":          OnGatewayError,
	"reset":                  OnReset,
	"connect-failure":        OnConnectFailure,
	"refused-stream":         OnRefusedStream,
	"retriable-status-codes": OnRetriableStatusCodes,
	"retriable-4xx":          OnRetriable4xx,
	"cancelled":              OnGRPCCancelled,
	"deadline-exceeded":      OnGRPCDeadlineExceeded,
	"internal":               OnGRPCInternal,
	"resource-exhausted":     OnGRPCResourceExhausted,
	"unavailable":            OnGRPCUnavailable,
}

// RetryPolicy is a compiled route retry policy.
type RetryPolicy struct {
	On            RetryOn
	NumRetries    int
	PerTryTimeout time.Duration // 0: none
	StatusCodes   []int
	// PreviousHosts avoids hosts already tried, drawing a host up to
	// HostSelectionAttempts times.
	PreviousHosts         bool
	HostSelectionAttempts int
	BackoffBase           time.Duration
	BackoffMax            time.Duration
}

// RetriableStatus reports whether an upstream response status (and
// grpc-status, -1 when absent) asks for a retry under p.
func (p *RetryPolicy) RetriableStatus(code, grpcStatus int) bool {
	switch {
	case p.On&On5xx != 0 && code >= 500:
		return true
	case p.On&OnGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case p.On&OnRetriable4xx != 0 && code == 409:
		return true
	}
	if p.On&OnRetriableStatusCodes != 0 {
		for _, c := range p.StatusCodes {
			if c == code {
				return true
			}
		}
	}
	switch grpcStatus {
	case 1:
		return p.On&OnGRPCCancelled != 0
	case 4:
		return p.On&OnGRPCDeadlineExceeded != 0
	case 8:
		return p.On&OnGRPCResourceExhausted != 0
	case 13:
		return p.On&OnGRPCInternal != 0
	case 14:
		return p.On&OnGRPCUnavailable != 0
	}
	return false
}

// RetriableReset reports whether a reset or connection failure before any
// response is retried. connectFailure tells a failed connect from a reset
// of an established stream; refused an HTTP/2 REFUSED_STREAM.
func (p *RetryPolicy) RetriableReset(connectFailure, refused bool) bool {
	if p.On&(On5xx|OnGatewayError|OnReset) != 0 {
		return true
	}
	if connectFailure && p.On&OnConnectFailure != 0 {
		return true
	}
	return refused && p.On&OnRefusedStream != 0
}

// RetriableTimeout reports whether a per-try timeout is retried: Envoy
// treats it as a 504 for 5xx and gateway-error, and as a reset.
func (p *RetryPolicy) RetriableTimeout() bool {
	return p.On&(On5xx|OnGatewayError|OnReset) != 0
}

// Backoff returns Envoy's jittered exponential back-off before retry n
// (1-based): whole milliseconds, uniform in [0, min(base * 2^(n-1), max)),
// as JitteredExponentialBackOffStrategy::nextBackOffMs draws it (random
// modulo the interval, which doubles from base up to max). Before retry 1
// under a 1 ms base it is 0: Envoy's floor on the base (BackoffInterval)
// shows from retry 2 on, and in the default max ten times it.
func (p *RetryPolicy) Backoff(n int) time.Duration {
	ms := uint64(p.backoffInterval(n) / time.Millisecond)
	if ms == 0 {
		return 0
	}
	return time.Duration(rand.Uint64N(ms)) * time.Millisecond
}

// backoffInterval is the interval the back-off before retry n is drawn
// below: the base doubled n-1 times while that stays within the max, the
// max after, as nextBackOffMs doubles it (compared with half the max, so
// it never overflows). Shifting the base by up to 20 instead kept retries
// past the 21st below base * 2^20 where the max is higher, and let a base
// of hours wrap below itself.
func (p *RetryPolicy) backoffInterval(n int) time.Duration {
	if k := min(max(n-1, 0), 62); p.BackoffBase > 0 && p.BackoffBase <= p.BackoffMax>>k {
		return p.BackoffBase << k
	}
	return p.BackoffMax
}

// BackoffInterval is a retry_back_off interval as Envoy's RetryPolicyImpl
// reads it: PROTOBUF_GET_MS_* counts it in whole milliseconds
// (DurationUtil::durationToMilliseconds truncates), and one below 1 ms is
// raised to 1 ms, so that a base_interval of 100 us backs off as one of
// 1 ms, with a default max_interval of 10 ms.
func BackoffInterval(d time.Duration) time.Duration {
	return max(d.Truncate(time.Millisecond), time.Millisecond)
}

func compileRetry(rp *routev3.RetryPolicy, path string) (*RetryPolicy, error) {
	if err := strict.Fields(rp, path, "retry_on", "num_retries", "per_try_timeout",
		"retry_host_predicate", "host_selection_retry_max_attempts", "retriable_status_codes",
		"retry_back_off"); err != nil {
		return nil, err
	}
	p := &RetryPolicy{NumRetries: 1, HostSelectionAttempts: 1,
		BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond}
	for _, s := range strings.Split(rp.GetRetryOn(), ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		on, ok := retryNames[s]
		if !ok {
			return nil, strict.Value(path, "retry_on", s, "unknown retry condition")
		}
		p.On |= on
	}
	if n := rp.GetNumRetries(); n != nil {
		p.NumRetries = int(n.GetValue())
	}
	if t := rp.GetPerTryTimeout(); t != nil {
		p.PerTryTimeout = t.AsDuration()
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.StatusCodes = append(p.StatusCodes, int(c))
	}
	if n := rp.GetHostSelectionRetryMaxAttempts(); n > 0 {
		p.HostSelectionAttempts = int(n)
	}
	for i, hp := range rp.GetRetryHostPredicate() {
		pp := strict.Join(path, "retry_host_predicate", i)
		if err := strict.Fields(hp, pp, "name", "typed_config"); err != nil {
			return nil, err
		}
		ok := hp.GetName() == "envoy.retry_host_predicates.previous_hosts"
		if tc := hp.GetTypedConfig(); tc != nil {
			m, err := tc.UnmarshalNew()
			if err != nil {
				return nil, fmt.Errorf("%s.typed_config: %w", pp, err)
			}
			_, ok = m.(*previoushostsv3.PreviousHostsPredicate)
		}
		if !ok {
			return nil, strict.Value(pp, "name", hp.GetName(), "only envoy.retry_host_predicates.previous_hosts is implemented")
		}
		p.PreviousHosts = true
	}
	if b := rp.GetRetryBackOff(); b != nil {
		bp := strict.Join(path, "retry_back_off")
		if err := strict.Fields(b, bp, "base_interval", "max_interval"); err != nil {
			return nil, err
		}
		// Both intervals must be positive (the proto's validation rules,
		// gt 0); then each counts in whole milliseconds, at least one
		// (BackoffInterval), before max is compared with base, as
		// RetryPolicyImpl's constructor does.
		base, maxi := b.GetBaseInterval().AsDuration(), b.GetMaxInterval()
		if base <= 0 || maxi != nil && maxi.AsDuration() <= 0 {
			return nil, fmt.Errorf("%s: need 0 < base_interval <= max_interval", bp)
		}
		p.BackoffBase = BackoffInterval(base)
		// Envoy's default max_interval, ten times the base, counted in
		// milliseconds there: saturated here past time.Duration's range
		// (a base of 100 years made it negative, the policy refused).
		p.BackoffMax = 10 * p.BackoffBase
		if p.BackoffBase > math.MaxInt64/10 {
			p.BackoffMax = math.MaxInt64
		}
		if maxi != nil {
			p.BackoffMax = BackoffInterval(maxi.AsDuration())
		}
		if p.BackoffMax < p.BackoffBase {
			return nil, fmt.Errorf("%s: need 0 < base_interval <= max_interval", bp)
		}
	}
	return p, nil
}
