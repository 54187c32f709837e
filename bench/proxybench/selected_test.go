package main

import "testing"

// TestSelected checks -only and -skip, each a comma-separated list.
func TestSelected(t *testing.T) {
	for _, tc := range []struct {
		name, only, skip string
		want             bool
	}{
		{"one weft proxy h2c", "", "", true},
		{"one weft proxy h2c", "h2c,haproxy", "", true},
		{"one weft proxy", "h2c,haproxy", "", false},
		{"one weft proxy, mTLS in", "one weft proxy", "h1 to h2,mTLS", false},
		{"one weft proxy h1 to h2", "one weft proxy", "h1 to h2,mTLS", false},
		{"two weft proxies h2c", "h2c", "two,mTLS", false},
		{"one weft proxy h2c", "h2c", "two,mTLS", true},
		{"one weft proxy h2c", "", "mTLS,", true},
		{"one weft proxy", "h2c,", "", false},
	} {
		if got := selected(tc.name, tc.only, tc.skip); got != tc.want {
			t.Errorf("selected(%q, only %q, skip %q) = %v, want %v", tc.name, tc.only, tc.skip, got, tc.want)
		}
	}
}
