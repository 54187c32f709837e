package main

import "testing"

func TestDirectOf(t *testing.T) {
	for n, want := range map[string]string{
		"one weft proxy":                 "app direct",
		"two haproxies mTLS in":          "app direct",
		"one weft proxy h1 to h2":        "app direct",
		"one weft proxy h2c":             "app direct h2c",
		"two weft proxies B h2c":         "app direct h2c",
		"haproxy" + h2tlsSuffix:          "app direct h2c",
		"two weft proxies" + h2tlsSuffix: "app direct h2c",
	} {
		if got := directOf(n); got != want {
			t.Errorf("directOf(%q) = %q, want %q", n, got, want)
		}
	}
}
