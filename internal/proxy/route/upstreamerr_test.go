package route

import (
	"syscall"
	"testing"
)

// TestRetriedBody: the body of a reset before the response head says
// "retried and the latest reset reason:" once the request was retried
// (its attempt after the first), as Envoy's Filter::onUpstreamReset
// words it under is_retry_; a first attempt's, and any other local
// reply's body, stay as they are.
func TestRetriedBody(t *testing.T) {
	const retried = "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: "
	refused := ConnectFailed(syscall.ECONNREFUSED, false).Body()
	cases := []struct {
		body     string
		attempts int
		want     string
	}{
		{refused, 1, refused},
		{refused, 2, retried + "remote connection failure, transport failure reason: delayed connect error: Connection refused"},
		{refused, 3, retried + "remote connection failure, transport failure reason: delayed connect error: Connection refused"},
		{ResetBody("connection termination"), 3, retried + "connection termination"},
		{UpstreamProtocolErrorBody, 2, retried + "protocol error"},
		{ResetBody("overflow"), 2, retried + "overflow"},
		{ResetBody("remote reset"), 0, ResetBody("remote reset")},
		{"upstream request timeout", 3, "upstream request timeout"},
		{"no healthy upstream", 2, "no healthy upstream"},
		{"", 2, ""},
	}
	for _, c := range cases {
		if got := RetriedBody(c.body, c.attempts); got != c.want {
			t.Errorf("RetriedBody(%q, %d) = %q, want %q", c.body, c.attempts, got, c.want)
		}
	}
}
