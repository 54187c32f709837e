package accesslog

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultFormat is Envoy's default access log format.
const DefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// value is one evaluated operator. ok false means "not available", which
// text renders as "-" and JSON as null.
type value struct {
	s   string
	n   int64
	num bool
	ok  bool
}

// sanitizeSNI is an SNI as %REQUESTED_SERVER_NAME% logs it, as Envoy 1.34
// does (StringUtil::sanitizeInvalidHostname; since 1.32, under
// sanitize_sni_in_access_log, with _ allowed since 1.33): one with a byte
// other than an ASCII letter, digit, '.', '-' or '_' is "invalid:" and
// the name with each such byte made '_', so that a client cannot write
// what it likes (a quote, a newline) into the log.
func sanitizeSNI(s string) string {
	hostByte := func(c byte) bool {
		return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_'
	}
	i := 0
	for i < len(s) && hostByte(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := append([]byte("invalid:"), s...)
	for j := len("invalid:") + i; j < len(b); j++ {
		if !hostByte(b[j]) {
			b[j] = '_'
		}
	}
	return string(b)
}

func str(s string) value {
	if s == "" {
		return value{}
	}
	return value{s: s, ok: true}
}

func num(n int64) value { return value{n: n, num: true, ok: true} }

func (v value) text() string {
	switch {
	case !v.ok:
		return "-"
	case v.num:
		return strconv.FormatInt(v.n, 10)
	default:
		return v.s
	}
}

// operator evaluates one %NAME(arg):N% against an entry.
type operator func(e *Entry) value

// segment is a literal or an operator.
type segment struct {
	lit string
	op  operator
	max int // truncation length, 0 = none
}

// Text is a compiled text format.
type Text struct {
	segs      []segment
	omitEmpty bool // render unavailable values as "" instead of "-"
	hostname  string
}

// CompileText parses a format string. Unknown operators are errors, as in
// Envoy, which rejects the configuration.
func CompileText(format string, omitEmpty bool) (*Text, error) {
	host, _ := os.Hostname()
	segs, err := parse(format, host)
	if err != nil {
		return nil, err
	}
	return &Text{segs: segs, omitEmpty: omitEmpty, hostname: host}, nil
}

// Append formats e onto b.
func (t *Text) Append(b []byte, e *Entry) []byte {
	for _, s := range t.segs {
		if s.op == nil {
			b = append(b, s.lit...)
			continue
		}
		v := s.op(e)
		if !v.ok && t.omitEmpty {
			continue
		}
		out := v.text()
		if s.max > 0 && len(out) > s.max {
			out = out[:s.max]
		}
		b = append(b, out...)
	}
	return b
}

func parse(format, host string) ([]segment, error) {
	var segs []segment
	var lit strings.Builder
	for i := 0; i < len(format); {
		c := format[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		end := findClose(format, i+1)
		if end < 0 {
			return nil, fmt.Errorf("format %q: unterminated command operator at offset %d", format, i)
		}
		body := format[i+1 : end]
		i = end + 1
		if body == "" { // "%%" is a literal percent sign
			lit.WriteByte('%')
			continue
		}
		op, max, err := compileOperator(body, host)
		if err != nil {
			return nil, fmt.Errorf("format %q: %w", format, err)
		}
		if lit.Len() > 0 {
			segs = append(segs, segment{lit: lit.String()})
			lit.Reset()
		}
		segs = append(segs, segment{op: op, max: max})
	}
	if lit.Len() > 0 {
		segs = append(segs, segment{lit: lit.String()})
	}
	return segs, nil
}

// findClose returns the index of the '%' that ends the operator starting at
// i, skipping over a parenthesised argument (START_TIME's argument may hold
// '%').
func findClose(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case '%':
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

func compileOperator(body, host string) (operator, int, error) {
	name, arg, max := body, "", 0
	hasArg := false
	if p := strings.IndexByte(body, '('); p >= 0 {
		q := strings.LastIndexByte(body, ')')
		if q < p {
			return nil, 0, fmt.Errorf("operator %%%s%%: missing ')'", body)
		}
		name, arg, hasArg = body[:p], body[p+1:q], true
		if rest := body[q+1:]; rest != "" {
			if rest[0] != ':' {
				return nil, 0, fmt.Errorf("operator %%%s%%: unexpected %q after ')'", body, rest)
			}
			n, err := strconv.Atoi(rest[1:])
			if err != nil || n <= 0 {
				return nil, 0, fmt.Errorf("operator %%%s%%: bad length %q", body, rest[1:])
			}
			max = n
		}
	}
	needArg := func() error {
		if !hasArg || arg == "" {
			return fmt.Errorf("operator %%%s%% needs an argument", name)
		}
		return nil
	}
	switch name {
	case "START_TIME":
		f, err := compileTime(arg)
		if err != nil {
			return nil, 0, fmt.Errorf("operator %%%s%%: %w", body, err)
		}
		return func(e *Entry) value {
			if e.Start.IsZero() {
				return value{}
			}
			return str(f(e.Start.UTC()))
		}, max, nil
	case "REQ", "REQUEST_HEADER", "REQ_WITHOUT_QUERY":
		if err := needArg(); err != nil {
			return nil, 0, err
		}
		get := requestHeader(arg, name == "REQ_WITHOUT_QUERY")
		return get, max, nil
	case "RESP", "RESPONSE_HEADER", "TRAILER", "RESPONSE_TRAILER":
		if err := needArg(); err != nil {
			return nil, 0, err
		}
		main, alt, _ := strings.Cut(arg, "?")
		trailer := name == "TRAILER" || name == "RESPONSE_TRAILER"
		return func(e *Entry) value {
			h := e.ResponseHeader
			if trailer {
				h = e.ResponseTrailer
			}
			if h == nil {
				return value{}
			}
			if v := h.Get(main); v != "" {
				return str(v)
			}
			if alt != "" {
				return str(h.Get(alt))
			}
			return value{}
		}, max, nil
	}
	if hasArg {
		return nil, 0, fmt.Errorf("operator %%%s%% takes no argument", name)
	}
	op, ok := simpleOperators(host)[name]
	if !ok {
		return nil, 0, fmt.Errorf("unknown command operator %%%s%%", name)
	}
	return op, max, nil
}

func millis(d time.Duration) value {
	if d < 0 {
		return value{}
	}
	return num(d.Milliseconds())
}

func withoutPort(a string) value {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return str(h)
	}
	return str(a)
}

func portOf(a string) value {
	if _, p, err := net.SplitHostPort(a); err == nil {
		if n, err := strconv.ParseInt(p, 10, 64); err == nil {
			return num(n)
		}
	}
	return value{}
}

func simpleOperators(host string) map[string]operator {
	return map[string]operator{
		"RESPONSE_CODE": func(e *Entry) value {
			if e.Request == nil && e.Head == nil {
				return num(0)
			}
			return num(int64(e.ResponseCode))
		},
		"RESPONSE_CODE_DETAILS": func(e *Entry) value { return str(e.CodeDetails) },
		"RESPONSE_FLAGS":        func(e *Entry) value { return value{s: e.Flags.String(), ok: true} },
		"RESPONSE_FLAGS_LONG":   func(e *Entry) value { return value{s: e.Flags.Long(), ok: true} },
		"PROTOCOL":              func(e *Entry) value { return str(e.Protocol) },
		"DURATION":              func(e *Entry) value { return millis(e.Duration) },
		"REQUEST_DURATION":      func(e *Entry) value { return millis(e.RequestDuration) },
		"RESPONSE_DURATION":     func(e *Entry) value { return millis(e.ResponseDuration) },
		"RESPONSE_TX_DURATION": func(e *Entry) value {
			if e.ResponseDuration < 0 {
				return value{}
			}
			return millis(e.Duration - e.ResponseDuration)
		},
		"BYTES_RECEIVED":         func(e *Entry) value { return num(e.BytesReceived) },
		"BYTES_SENT":             func(e *Entry) value { return num(e.BytesSent) },
		"UPSTREAM_HOST":          func(e *Entry) value { return str(e.UpstreamHost) },
		"UPSTREAM_CLUSTER":       func(e *Entry) value { return str(e.UpstreamCluster) },
		"UPSTREAM_LOCAL_ADDRESS": func(e *Entry) value { return str(e.UpstreamLocalAddress) },
		// Each space an underscore, as Envoy's formatter writes it
		// (std::replace in its UPSTREAM_TRANSPORT_FAILURE_REASON).
		"UPSTREAM_TRANSPORT_FAILURE_REASON": func(e *Entry) value { return str(strings.ReplaceAll(e.UpstreamFailure, " ", "_")) },
		"UPSTREAM_REQUEST_ATTEMPT_COUNT":    func(e *Entry) value { return num(int64(e.Attempts)) },
		"DOWNSTREAM_REMOTE_ADDRESS":         func(e *Entry) value { return str(e.DownstreamRemote) },
		"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": func(e *Entry) value {
			return withoutPort(e.DownstreamRemote)
		},
		"DOWNSTREAM_REMOTE_PORT":   func(e *Entry) value { return portOf(e.DownstreamRemote) },
		"DOWNSTREAM_LOCAL_ADDRESS": func(e *Entry) value { return str(e.DownstreamLocal) },
		"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": func(e *Entry) value {
			return withoutPort(e.DownstreamLocal)
		},
		"DOWNSTREAM_LOCAL_PORT":            func(e *Entry) value { return portOf(e.DownstreamLocal) },
		"DOWNSTREAM_DIRECT_REMOTE_ADDRESS": func(e *Entry) value { return str(e.DownstreamDirectPeer) },
		"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": func(e *Entry) value {
			return withoutPort(e.DownstreamDirectPeer)
		},
		"REQUESTED_SERVER_NAME": func(e *Entry) value { return str(sanitizeSNI(e.ServerName)) },
		"ROUTE_NAME":            func(e *Entry) value { return str(e.RouteName) },
		"HOSTNAME":              func(e *Entry) value { return str(host) },
		"CONNECTION_ID":         func(e *Entry) value { return num(int64(e.ConnectionID)) },
		"GRPC_STATUS":           func(e *Entry) value { return grpcStatus(e, false) },
		"GRPC_STATUS_NUMBER":    func(e *Entry) value { return grpcStatus(e, true) },
	}
}

var grpcCodeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
	"NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
	"Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func grpcStatus(e *Entry, number bool) value {
	s := ""
	if e.ResponseTrailer != nil {
		s = e.ResponseTrailer.Get("Grpc-Status")
	}
	if s == "" && e.ResponseHeader != nil {
		s = e.ResponseHeader.Get("Grpc-Status")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return value{}
	}
	if number || n < 0 || n >= len(grpcCodeNames) {
		return num(int64(n))
	}
	return str(grpcCodeNames[n])
}

// requestHeader implements REQ(X?Y): header X, else header Y. Pseudo
// headers map onto the request line (:method, :path, :authority) and
// Entry.Scheme (:scheme).
func requestHeader(arg string, withoutQuery bool) operator {
	// Lower case once here: header lookups ignore case, and the pseudo
	// headers are matched lower case.
	main, alt, _ := strings.Cut(strings.ToLower(arg), "?")
	get := func(e *Entry, name string) string {
		if name == ":scheme" {
			return e.Scheme
		}
		if e.Head != nil && name != "" {
			return headField(e.Head, name, withoutQuery)
		}
		r := e.Request
		if r == nil || name == "" {
			return ""
		}
		switch name {
		case ":method":
			return r.Method
		case ":path":
			p := r.URL.RequestURI()
			if withoutQuery {
				p, _, _ = strings.Cut(p, "?")
			}
			return p
		case ":authority", "host":
			return r.Host
		}
		v := r.Header.Get(name)
		if withoutQuery && name == "x-envoy-original-path" {
			v, _, _ = strings.Cut(v, "?")
		}
		return v
	}
	return func(e *Entry) value {
		if v := get(e, main); v != "" {
			return str(v)
		}
		return str(get(e, alt))
	}
}

// headField is requestHeader's lookup of name (lower case, not :scheme)
// in a RequestHead.
func headField(h RequestHead, name string, withoutQuery bool) string {
	switch name {
	case ":method":
		return h.Method()
	case ":path":
		p := h.RequestURI()
		if withoutQuery {
			p, _, _ = strings.Cut(p, "?")
		}
		return p
	case ":authority", "host":
		return h.Host()
	}
	v := h.Header(name)
	if withoutQuery && name == "x-envoy-original-path" {
		v, _, _ = strings.Cut(v, "?")
	}
	return v
}

// compileTime compiles a START_TIME format. Empty means Envoy's default,
// ISO 8601 in UTC with milliseconds.
func compileTime(f string) (func(time.Time) string, error) {
	if f == "" {
		return func(t time.Time) string { return t.Format("2006-01-02T15:04:05.000Z") }, nil
	}
	type piece func(b []byte, t time.Time) []byte
	var ps []piece
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '%' || i+1 == len(f) {
			ps = append(ps, func(b []byte, _ time.Time) []byte { return append(b, c) })
			continue
		}
		i++
		digits := 0
		if f[i] >= '1' && f[i] <= '9' && i+1 < len(f) && f[i+1] == 'f' {
			digits = int(f[i] - '0')
			i++
		}
		spec := f[i]
		layout := ""
		switch spec {
		case 'Y':
			layout = "2006"
		case 'y':
			layout = "06"
		case 'm':
			layout = "01"
		case 'd':
			layout = "02"
		case 'e':
			layout = "_2"
		case 'H':
			layout = "15"
		case 'M':
			layout = "04"
		case 'S':
			layout = "05"
		case 'b', 'h':
			layout = "Jan"
		case 'B':
			layout = "January"
		case 'a':
			layout = "Mon"
		case 'A':
			layout = "Monday"
		case 'z':
			layout = "-0700"
		case 'Z':
			layout = "MST"
		case 'T':
			layout = "15:04:05"
		case 'F':
			layout = "2006-01-02"
		case 'D':
			layout = "01/02/06"
		case 'j':
			layout = "002"
		case '%':
			ps = append(ps, func(b []byte, _ time.Time) []byte { return append(b, '%') })
			continue
		case 's':
			ps = append(ps, func(b []byte, t time.Time) []byte { return strconv.AppendInt(b, t.Unix(), 10) })
			continue
		case 'f':
			if digits == 0 {
				digits = 9
			}
			d := digits
			ps = append(ps, func(b []byte, t time.Time) []byte {
				frac := int64(t.Nanosecond()) / int64(math.Pow10(9-d))
				s := strconv.FormatInt(frac, 10)
				for k := len(s); k < d; k++ {
					b = append(b, '0')
				}
				return append(b, s...)
			})
			continue
		default:
			return nil, fmt.Errorf("unsupported time specifier %%%c", spec)
		}
		l := layout
		ps = append(ps, func(b []byte, t time.Time) []byte { return t.AppendFormat(b, l) })
	}
	return func(t time.Time) string {
		var b []byte
		for _, p := range ps {
			b = p(b, t)
		}
		return string(b)
	}, nil
}
