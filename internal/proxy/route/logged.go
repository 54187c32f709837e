package route

// What of an HTTP/1.1 request's headers Envoy has removed or changed by
// the time it routes the request and writes its access log. Its codec
// removes the headers a Connection header names, as it reads the head
// (sanitizeConnectionHeader in ServerConnectionImpl::onHeadersCompleteBase,
// but for an upgrade); its connection manager then removes Connection and
// Upgrade (but for an upgrade: Utility::isUpgrade), Keep-Alive,
// Proxy-Connection and Transfer-Encoding, and keeps of TE only
// "trailers" (ConnectionManagerUtility::mutateRequestHeaders, then
// sanitizeTEHeader: TETrailers), once the request passed the checks before
// (its Host first: a request answered 400 missing_host_header is logged
// with them), and before it picks the route (refreshCachedRoute). So a
// route's header match on Connection, Upgrade or a header Connection
// names does not match a request that is not an upgrade, and one on TE
// sees "trailers" or nothing; the log's %REQ(CONNECTION)% is "-" and its
// %REQ(TE)% "trailers" or "-", but for an upgrade. Both request paths
// apply this one rule (Seen) when they match routes (Config.Match and
// MatchHead: headSeen) and to what they log: the goroutine path to the
// request's header map (httpconn's finish), the event loops to their
// lookup of a head's lines (loopHead.Header).

// DetailsMissingHost is the response code details of a request answered
// for its missing Host, before Envoy's connection manager removed any
// header of it.
const DetailsMissingHost = "missing_host_header"

// HeaderSeen is what Envoy has of a request's header after its codec and
// connection manager sanitized the request (Seen).
type HeaderSeen uint8

const (
	// AsSent: the header is as the client sent it.
	AsSent HeaderSeen = iota
	// Gone: the header was removed.
	Gone
	// Trailers: TE, which holds "trailers" and only that.
	Trailers
)

// Seen is what Envoy has of the header name (any case) of an HTTP/1.1
// request that is not an upgrade, when it routes the request and logs
// it: named says one of its Connection lines names the header
// (ConnectionNames), teTrailers that one of its TE lines holds trailers
// (TETrailers); missingHost, that the request was answered for its
// missing Host before the connection manager removed anything (only the
// codec's removals were made).
func Seen(name string, named, teTrailers, missingHost bool) HeaderSeen {
	switch {
	case EqualFoldASCII(name, "te"):
		// The codec keeps a TE that Connection names as "trailers" or
		// removes it; the connection manager does the same to any TE.
		if !named && missingHost {
			return AsSent
		}
		if teTrailers {
			return Trailers
		}
		return Gone
	case named:
		return Gone
	case missingHost:
		return AsSent
	case EqualFoldASCII(name, "connection"), EqualFoldASCII(name, "upgrade"), EqualFoldASCII(name, "keep-alive"),
		EqualFoldASCII(name, "proxy-connection"), EqualFoldASCII(name, "transfer-encoding"):
		return Gone
	}
	return AsSent
}

// mayChange reports whether Seen may be other than AsSent for name
// whatever the request's Connection header: a header the connection
// manager removes, or TE.
func mayChange(name string) bool {
	return Seen(name, false, false, false) != AsSent
}

// ConnectionNames reports whether a Connection line's value v has a token
// naming the header name, as one whose header Envoy's codec removes
// (ConnectionToken's ConnNames).
func ConnectionNames[T ~string | ~[]byte](v T, name string) bool {
	for tok, rest, ok := CutConnectionToken(v); ok; tok, rest, ok = CutConnectionToken(rest) {
		if ConnectionToken(tok) == ConnNames && EqualFoldASCII(tok, name) {
			return true
		}
	}
	return false
}

// SeenIn is Seen for a request whose Connection, Upgrade and TE lines
// hold conn, upgrade and te (their values in order), of an HTTP/1.1
// request: an upgrade (IsUpgrade) has every header as sent. (An HTTP/2
// request carries none of these headers but a TE of "trailers": its
// codec refuses the rest.)
func SeenIn[T ~string | ~[]byte](name string, conn, upgrade, te []T, missingHost bool) HeaderSeen {
	named := false
	for _, v := range conn {
		named = named || ConnectionNames(v, name)
	}
	if !named && !mayChange(name) || IsUpgrade(conn, upgrade) {
		return AsSent
	}
	trailers := false
	for _, v := range te {
		trailers = trailers || TETrailers(v)
	}
	return Seen(name, named, trailers, missingHost)
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
		if connectionUpgrade(v) {
			return true
		}
	}
	return false
}

// connectionUpgrade reports whether a Connection line's value v has the
// upgrade token.
func connectionUpgrade[T ~string | ~[]byte](v T) bool {
	for tok, rest, ok := CutConnectionToken(v); ok; tok, rest, ok = CutConnectionToken(rest) {
		if ConnectionToken(tok) == ConnUpgrade {
			return true
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
