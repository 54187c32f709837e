package route

import "testing"

// TestBodylessFramed: Envoy's HTTP/1 codec refuses a 1xx (101 included)
// or 204 head with a Transfer-Encoding or a Content-Length other than "0"
// as written, and takes any other status with either.
func TestBodylessFramed(t *testing.T) {
	tests := []struct {
		status int
		te     bool
		hasCL  bool
		cl     string
		want   bool
	}{
		{100, false, false, "", false},
		{103, false, true, "0", false},
		{204, false, true, "0", false},
		{100, true, false, "", true},
		{101, true, false, "", true},
		{204, true, false, "", true},
		{103, false, true, "5", true},
		{204, false, true, "00", true},
		{101, false, true, "2", true},
		{200, true, false, "", false},
		{200, false, true, "5", false},
		{304, false, true, "5", false},
		{205, false, true, "5", false},
	}
	for _, tt := range tests {
		if got := BodylessFramed(tt.status, tt.te, tt.hasCL, tt.cl); got != tt.want {
			t.Errorf("BodylessFramed(%d, te %v, cl %v %q) = %v; want %v", tt.status, tt.te, tt.hasCL, tt.cl, got, tt.want)
		}
	}
}
