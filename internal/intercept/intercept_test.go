package intercept

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		family Family
		want   string
	}{
		{
			name: "ecs task definition of the tutorial",
			cfg: Config{
				AppPorts: []uint16{80}, IgnoredUID: 1337, IgnoredGID: -1,
				ProxyIngressPort: 15000, ProxyEgressPort: 15001,
				EgressIgnoredIPs: mustIPs(t, "169.254.170.2,169.254.169.254"),
			},
			want: `*nat
:APPMESH_INGRESS - [0:0]
:APPMESH_EGRESS - [0:0]
-A APPMESH_INGRESS -p tcp -m multiport --dports 80 -j REDIRECT --to-ports 15000
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -p tcp -m multiport --dports 22 -j RETURN
-A APPMESH_EGRESS -p tcp -d 169.254.170.2/32 -j RETURN
-A APPMESH_EGRESS -p tcp -d 169.254.169.254/32 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001
COMMIT
*raw
:WEFT_PROXY_ZONE - [0:0]
-A WEFT_PROXY_ZONE -p tcp -m owner --uid-owner 1337 -m tcp --sport 32768:60999 -j CT --zone-orig 1337
COMMIT
`,
		},
		{
			name: "gid, ignored ports beyond one multiport match, ipv6 addresses skipped for ipv4",
			cfg: Config{
				AppPorts: []uint16{8080, 9090}, IgnoredUID: -1, IgnoredGID: 1338,
				ProxyIngressPort: 15000, ProxyEgressPort: 15001,
				EgressIgnoredIPs:   mustIPs(t, "10.0.0.0/8,fd00::1"),
				EgressIgnoredPorts: []uint16{22, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
			},
			want: `*nat
:APPMESH_INGRESS - [0:0]
:APPMESH_EGRESS - [0:0]
-A APPMESH_INGRESS -p tcp -m multiport --dports 8080,9090 -j REDIRECT --to-ports 15000
-A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN
-A APPMESH_EGRESS -p tcp -m multiport --dports 22,1,2,3,4,5,6,7,8,9,10,11,12,13,14 -j RETURN
-A APPMESH_EGRESS -p tcp -m multiport --dports 15 -j RETURN
-A APPMESH_EGRESS -p tcp -d 10.0.0.0/8 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001
COMMIT
*raw
:WEFT_PROXY_ZONE - [0:0]
-A WEFT_PROXY_ZONE -p tcp -m owner --gid-owner 1338 -m tcp --sport 32768:60999 -j CT --zone-orig 1337
COMMIT
`,
		},
		{
			name: "ipv6 keeps only ipv6 addresses; no app ports means no ingress rule",
			cfg: Config{
				IgnoredUID: 1337, IgnoredGID: -1, ProxyEgressPort: 15001,
				EgressIgnoredIPs: mustIPs(t, "10.0.0.1,fd00::1"),
			},
			family: IPv6,
			want: `*nat
:APPMESH_INGRESS - [0:0]
:APPMESH_EGRESS - [0:0]
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -p tcp -m multiport --dports 22 -j RETURN
-A APPMESH_EGRESS -p tcp -d fd00::1/128 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001
COMMIT
*raw
:WEFT_PROXY_ZONE - [0:0]
-A WEFT_PROXY_ZONE -p tcp -m owner --uid-owner 1337 -m tcp --sport 32768:60999 -j CT --zone-orig 1337
COMMIT
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := Rules(tt.cfg, tt.family, DefaultPortRange); got != tt.want {
				t.Errorf("Rules:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	if r, err := ParsePortRange("32768\t60999\n"); err != nil || r != (PortRange{32768, 60999}) {
		t.Errorf("ParsePortRange = %v, %v", r, err)
	}
	for _, bad := range []string{"", "1", "60999 32768", "0 10", "1 70000", "a b"} {
		if _, err := ParsePortRange(bad); err == nil {
			t.Errorf("ParsePortRange(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	base := Config{AppPorts: []uint16{80}, IgnoredUID: 1337, IgnoredGID: -1, ProxyIngressPort: 15000, ProxyEgressPort: 15001}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" for none
	}{
		{"ok", func(*Config) {}, ""},
		{"neither uid nor gid", func(c *Config) { c.IgnoredUID = -1 }, "ignored UID"},
		{"no egress port", func(c *Config) { c.ProxyEgressPort = 0 }, "egress port"},
		{"app port is the ingress port", func(c *Config) { c.AppPorts = []uint16{15000} }, "also a proxy port"},
		{"no ingress port with app ports", func(c *Config) { c.ProxyIngressPort = 0 }, "ingress port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	ports, err := ParsePorts(" 80, 8080,,")
	if err != nil || len(ports) != 2 || ports[0] != 80 || ports[1] != 8080 {
		t.Errorf("ParsePorts = %v, %v", ports, err)
	}
	for _, bad := range []string{"0", "65536", "http"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
	ips, err := ParseIPs("169.254.170.2, 10.0.0.0/8,::1")
	want := []netip.Prefix{netip.MustParsePrefix("169.254.170.2/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if err != nil || len(ips) != len(want) {
		t.Fatalf("ParseIPs = %v, %v", ips, err)
	}
	for i := range want {
		if ips[i] != want[i] {
			t.Errorf("ParseIPs[%d] = %s, want %s", i, ips[i], want[i])
		}
	}
	if _, err := ParseIPs("10.0.0.300"); err == nil {
		t.Error("ParseIPs accepted 10.0.0.300")
	}
}

func mustIPs(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	p, err := ParseIPs(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
