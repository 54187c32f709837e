package route

// RetryVerdict is how a request's failed attempt, whose outcome its
// retry policy retries, ends: retried, or why not, which decides what
// is flagged and counted.
type RetryVerdict int

const (
	// RetryGo: retried, a retry of the cluster's max_retries taken.
	RetryGo RetryVerdict = iota
	// RetryBodyGone: the request is not at hand to send again, its body
	// outgrew MaxRetryBuffer (or a path no longer keeps it). Nothing is
	// flagged nor counted: Envoy's Filter::decodeData dropped its retry
	// state when the body outgrew its buffer, so onUpstreamHeaders and
	// maybeRetryReset see none.
	RetryBodyGone
	// RetrySpent: num_retries spent; flagged URX and counted in
	// upstream_rq_retry_limit_exceeded (RetryStatus::NoRetryLimitExceeded).
	RetrySpent
	// RetryNoBudget: the cluster's max_retries spent; flagged UO
	// (RetryStatus::NoOverflow), counted by the budget.
	RetryNoBudget
)

// DecideRetry is the retry verdict of every path, in Envoy's order: a
// body that outgrew MaxRetryBuffer first (its retry state is gone before
// RetryStateImpl counts retries), then num_retries (retries is how many
// the request took), then whether the path still keeps the request
// (kept), then the cluster's budget: take reserves one of its
// max_retries, and is called only when all else lets the retry go.
func DecideRetry(retries, numRetries int, outgrew, kept bool, take func() bool) RetryVerdict {
	switch {
	case outgrew:
		return RetryBodyGone
	case retries >= numRetries:
		return RetrySpent
	case !kept:
		return RetryBodyGone
	case !take():
		return RetryNoBudget
	}
	return RetryGo
}
