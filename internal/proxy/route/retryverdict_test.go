package route

import "testing"

// TestDecideRetry: the verdict's order, Envoy's: a body that outgrew the
// buffer wins over spent retries (no URX), spent retries over a request
// no longer kept, and the budget is asked only when all else lets the
// retry go.
func TestDecideRetry(t *testing.T) {
	tests := []struct {
		name            string
		retries, num    int
		outgrew, kept   bool
		budget          bool
		want            RetryVerdict
		wantBudgetAsked bool
	}{
		{"first retry", 0, 2, false, true, true, RetryGo, true},
		{"last retry", 1, 2, false, true, true, RetryGo, true},
		{"spent", 2, 2, false, true, true, RetrySpent, false},
		{"no num_retries", 0, 0, false, true, true, RetrySpent, false},
		{"outgrew with retries left", 0, 2, true, true, true, RetryBodyGone, false},
		{"outgrew at the last attempt", 2, 2, true, false, true, RetryBodyGone, false},
		{"not kept", 0, 2, false, false, true, RetryBodyGone, false},
		{"spent and not kept", 2, 2, false, false, true, RetrySpent, false},
		{"no budget", 0, 2, false, true, false, RetryNoBudget, true},
		{"outgrew and no budget", 0, 2, true, true, false, RetryBodyGone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asked := false
			got := DecideRetry(tt.retries, tt.num, tt.outgrew, tt.kept, func() bool { asked = true; return tt.budget })
			if got != tt.want || asked != tt.wantBudgetAsked {
				t.Errorf("DecideRetry = %d (budget asked %v), want %d (%v)", got, asked, tt.want, tt.wantBudgetAsked)
			}
		})
	}
}
