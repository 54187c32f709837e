package route

// What of an HTTP/1.1 request's headers Envoy has removed by the time its
// access log is written. Its codec removes the headers a Connection
// header names, as it reads the head (sanitizeConnectionHeader in
// ServerConnectionImpl::onHeadersCompleteBase, but for an upgrade);
// its connection manager then removes Connection and Upgrade (but for an
// upgrade: Utility::isUpgrade), Keep-Alive, Proxy-Connection and
// Transfer-Encoding (ConnectionManagerUtility::mutateRequestHeaders),
// once the request passed the checks before (its Host first: a request
// answered 400 missing_host_header is logged with them). The log reads
// the request as it is then, so %REQ(CONNECTION)% is "-" but for an
// upgrade. Both request paths apply this rule to what they log
// (LoggedWithout): the goroutine path to the request's header map
// (httpconn's finish), the event loops to their lookup of a head's
// lines (loopHead.Header).

// DetailsMissingHost is the response code details of a request answered
// for its missing Host, before Envoy's connection manager removed any
// header of it.
const DetailsMissingHost = "missing_host_header"

// LoggedWithout reports whether the header name (any case) is missing
// from the log of a request that is not an upgrade and whose Connection
// header holds conn (its lines in order): it is one the connection
// manager removes, unless the request was answered for its missing Host
// (missingHost), or one a token of conn names (TE aside: Envoy's codec
// keeps it as "trailers" when it holds that, and this rule leaves it).
func LoggedWithout[T ~string | ~[]byte](name string, conn []T, missingHost bool) bool {
	if !missingHost {
		switch {
		case EqualFoldASCII(name, "connection"), EqualFoldASCII(name, "upgrade"), EqualFoldASCII(name, "keep-alive"),
			EqualFoldASCII(name, "proxy-connection"), EqualFoldASCII(name, "transfer-encoding"):
			return true
		}
	}
	if EqualFoldASCII(name, "te") {
		return false
	}
	for _, v := range conn {
		for tok, rest, ok := CutConnectionToken(v); ok; tok, rest, ok = CutConnectionToken(rest) {
			if ConnectionToken(tok) == ConnNames && EqualFoldASCII(tok, name) {
				return true
			}
		}
	}
	return false
}

// IsUpgrade is Envoy's Utility::isUpgrade of an HTTP/1.1 request: it has
// an Upgrade header, whatever its value (an empty one too), and a
// Connection header with the upgrade token. conn and upgrade are the
// Connection and Upgrade lines' values.
func IsUpgrade[T ~string | ~[]byte](conn, upgrade []T) bool {
	if len(upgrade) == 0 {
		return false
	}
	for _, v := range conn {
		for tok, rest, ok := CutConnectionToken(v); ok; tok, rest, ok = CutConnectionToken(rest) {
			if ConnectionToken(tok) == ConnUpgrade {
				return true
			}
		}
	}
	return false
}

// UpgradeType is the protocol an upgrade asks for as Envoy's connection
// manager looks it up among the enabled ones (createUpgradeFilterChain,
// case aside): its Upgrade lines' values joined by commas, the empty
// ones skipped, as its header map joins them; "" when all are empty,
// which no upgrade_configs entry enables.
func UpgradeType(upgrade []string) string {
	var t string
	for _, v := range upgrade {
		switch {
		case v == "":
		case t == "":
			t = v
		default:
			t += "," + v
		}
	}
	return t
}
