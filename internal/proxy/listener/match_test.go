package listener

import (
	"net/netip"
	"testing"
)

func TestSelect(t *testing.T) {
	p := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	// The App Mesh egress listener: one chain per backend port, the
	// *.amazonaws.com SNI chain on 443, and ALLOW_ALL catch-alls.
	chains := []Match{
		{DstPort: 8080}, // 0
		{DstPort: 443, DstPrefixes: p("0.0.0.0/0"), ServerNames: []string{"*.amazonaws.com"}}, // 1
		{DstPort: 443, DstPrefixes: p("0.0.0.0/0")},                                           // 2
		{DstPrefixes: p("0.0.0.0/0")},                                                         // 3
		{DstPort: 9090, DstPrefixes: p("10.0.0.0/8")},                                         // 4
	}
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	cases := []struct {
		name string
		ci   ConnInfo
		want int
	}{
		{"backend port", ConnInfo{Dst: ap("10.1.2.3:8080")}, 0},
		{"aws api by SNI", ConnInfo{Dst: ap("52.1.2.3:443"), ServerName: "s3.amazonaws.com", TLS: true}, 1},
		{"other 443 traffic", ConnInfo{Dst: ap("52.1.2.3:443"), ServerName: "example.com", TLS: true}, 2},
		{"anything else", ConnInfo{Dst: ap("52.1.2.3:25")}, 3},
		{"longest prefix on a port", ConnInfo{Dst: ap("10.9.9.9:9090")}, 4},
		{"no backtracking to the port-less chain", ConnInfo{Dst: ap("192.168.1.1:9090")}, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Select(chains, tc.ci); got != tc.want {
				t.Fatalf("chain %d, want %d", got, tc.want)
			}
		})
	}
}
