package tlsctx

import (
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// sanMatcher is one compiled SubjectAltNameMatcher.
type sanMatcher struct {
	typ   tlsv3.SubjectAltNameMatcher_SanType
	match func(string) bool
	exact string // for DNS wildcard certificates; "" unless exact
}

func compileSANs(ms []*tlsv3.SubjectAltNameMatcher, path string) ([]sanMatcher, error) {
	var out []sanMatcher
	for i, m := range ms {
		fp := fmt.Sprintf("%s[%d]", path, i)
		if err := strict.Fields(m, fp, "san_type", "matcher"); err != nil {
			return nil, err
		}
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI,
			tlsv3.SubjectAltNameMatcher_EMAIL, tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
		default:
			return nil, strict.Value(fp, "san_type", m.GetSanType(), "DNS, URI, EMAIL or IP_ADDRESS")
		}
		fn, exact, err := stringMatcher(m.GetMatcher(), fp+".matcher")
		if err != nil {
			return nil, err
		}
		out = append(out, sanMatcher{typ: m.GetSanType(), match: fn, exact: exact})
	}
	return out, nil
}

func stringMatcher(sm *matcherv3.StringMatcher, path string) (func(string) bool, string, error) {
	if sm == nil {
		return nil, "", fmt.Errorf("%s: required", path)
	}
	if err := strict.Fields(sm, path, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); err != nil {
		return nil, "", err
	}
	ic := sm.GetIgnoreCase()
	norm := func(s string) string {
		if ic {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := norm(p.Exact)
		return func(s string) bool { return norm(s) == want }, p.Exact, nil
	case *matcherv3.StringMatcher_Prefix:
		want := norm(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), want) }, "", nil
	case *matcherv3.StringMatcher_Suffix:
		want := norm(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), want) }, "", nil
	case *matcherv3.StringMatcher_Contains:
		want := norm(p.Contains)
		return func(s string) bool { return strings.Contains(norm(s), want) }, "", nil
	case *matcherv3.StringMatcher_SafeRegex:
		if err := strict.Fields(p.SafeRegex, path+".safe_regex", "regex", "google_re2"); err != nil {
			return nil, "", err
		}
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, "", fmt.Errorf("%s.safe_regex.regex: %w", path, err)
		}
		return re.MatchString, "", nil
	}
	return nil, "", fmt.Errorf("%s: a match pattern is required", path)
}

// matches reports whether any SAN of cert satisfies any matcher.
func matches(ms []sanMatcher, cert *x509.Certificate) bool {
	for _, m := range ms {
		switch m.typ {
		case tlsv3.SubjectAltNameMatcher_DNS:
			for _, n := range cert.DNSNames {
				// An exact name also matches a wildcard certificate
				// (*.example.com covers a.example.com), as in Envoy.
				if m.match(n) || m.exact != "" && wildcardMatch(n, m.exact) {
					return true
				}
			}
		case tlsv3.SubjectAltNameMatcher_URI:
			for _, u := range cert.URIs {
				if m.match(u.String()) {
					return true
				}
			}
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			for _, e := range cert.EmailAddresses {
				if m.match(e) {
					return true
				}
			}
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			for _, ip := range cert.IPAddresses {
				if m.match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// wildcardMatch matches a certificate name "*.example.com" against one
// label in front of example.com.
func wildcardMatch(pattern, name string) bool {
	if !strings.HasPrefix(pattern, "*.") {
		return false
	}
	i := strings.IndexByte(name, '.')
	return i > 0 && strings.EqualFold(name[i:], pattern[1:])
}

// Verification failures, told apart for Envoy's stats.
var (
	errNoCert = errors.New("peer presented no certificate")
	errSAN    = errors.New("peer certificate has no subject alternative name that is allowed")
)

// verifyChain checks a peer chain against roots and the SAN matchers.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, sans []sanMatcher) error {
	if len(chain) == 0 {
		return errNoCert
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	// Envoy does not check extended key usage by default: neither does
	// weft (mesh certificates often carry only one of client or server).
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return err
	}
	if len(sans) > 0 && !matches(sans, chain[0]) {
		return fmt.Errorf("%w (has DNS %v, URI %v)", errSAN, chain[0].DNSNames, uriStrings(chain[0]))
	}
	return nil
}

func uriStrings(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}
