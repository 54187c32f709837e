package cluster

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Client is the HTTP/1.1 client of one cluster. It writes a request and
// reads its response on the caller's goroutine, over keep-alive
// connections pooled per host address, using net/http's own message
// reader and writer (Request.Write, ReadResponse).
//
// net/http's Transport runs a reader and a writer goroutine per connection
// and hands every exchange between them and the caller: four goroutine
// hand-offs per request, each of which may wake another OS thread. At
// sidecar rates those wake-ups cost more than the exchange itself. What
// this client does not do inline goes to fallback, a Transport: upgrades,
// Expect: 100-continue, and request bodies of unknown length or longer
// than maxInlineBody, which a Transport writes while it reads the
// response (an upstream may answer before it has read the body).
type h1Client struct {
	c           *Cluster
	fallback    *http.Transport
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by host address, least recently used first; protected by mu
	closed bool                 // set by closeIdle; protected by mu
	// keep is the last forget's: whether a connection's host (its
	// address, and the Host that dialled it when known) is in the
	// cluster; nil until a forget. A connection whose host left while its
	// exchange ran, or was replaced (added again, or moved to another
	// locality: a new Host), is closed when it ends, not pooled.
	// Protected by mu.
	keep func(addr string, h *Host) bool
	// fbIdle holds the fallback Transport's idle connections
	// (h1fallback.go). Protected by mu.
	fbIdle map[*fbConn]bool
}

const (
	// maxInlineBody is the longest request body sent inline: it fits in
	// the socket buffers, so writing it cannot wait on an upstream that
	// answers without reading it.
	maxInlineBody = 64 << 10
	// maxIdlePerHost bounds the idle connections kept per host, as the
	// Transport's MaxIdleConnsPerHost did.
	maxIdlePerHost = 1024
	// staleAfter is how long a connection may sit idle before it is
	// checked for a close by the upstream before reuse (Node's default
	// keep-alive timeout is 5 s; Envoy learns of such closes from its
	// event loop).
	staleAfter = time.Second
	// bufSize is the size of each connection's read and write buffers.
	bufSize = 4 << 10
)

// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// writers holds the write buffers of upstream requests (exchange).
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}

func newH1Client(c *Cluster, fallback *http.Transport) *h1Client {
	return &h1Client{c: c, fallback: fallback, idleTimeout: c.idleTimeout(), idle: map[string][]*h1Conn{}}
}

// h1Conn is one upstream connection. It belongs to the pool while idle
// and to one exchange at a time otherwise.
type h1Conn struct {
	nc        net.Conn
	raw       syscall.RawConn // for the liveness check; nil if unavailable
	addr      string
	host      *Host // the Host it was dialled for; nil when unknown
	br        *bufio.Reader
	limit     *headLimit // under br: bounds each response head
	reused    bool
	idleSince time.Time
	abort     func() // aborts blocked I/O; bound once, used by context.AfterFunc
}

func newH1Conn(nc net.Conn, addr string, h *Host) *h1Conn {
	hl := &headLimit{r: nc, left: -1}
	pc := &h1Conn{nc: nc, addr: addr, host: h, br: bufio.NewReaderSize(hl, bufSize), limit: hl}
	if sc, ok := nc.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	} else if tc, ok := nc.(interface{ NetConn() net.Conn }); ok {
		// TLS: the socket under it. An idle TLS connection has nothing to
		// read either: bytes there are a close_notify or a reset coming.
		if sc, ok := tc.NetConn().(syscall.Conn); ok {
			pc.raw, _ = sc.SyscallConn()
		}
	}
	pc.abort = func() { _ = pc.nc.SetDeadline(aLongTimeAgo) }
	return pc
}

// inline reports whether the request is exchanged on the caller's goroutine.
// A client's Expect: 100-continue never comes here (the proxy answers it
// and removes it: httpconn's serveOne, x/net's server), but another
// expectation holding the token does (100-continue, foo), forwarded as
// Envoy forwards it, as does one a route adds (request_headers_to_add):
// they go through net/http's Transport, which reads a 100 as one (its
// ExpectContinueTimeout unset, it sends the body without waiting).
func inline(req *http.Request) bool {
	if req.ContentLength < 0 || req.ContentLength > maxInlineBody || req.ContentLength > 0 && bodyComing(req.Context()) {
		return false
	}
	if req.Header.Get("Upgrade") != "" || httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
		return false
	}
	return req.URL.Scheme == "http"
}

// bodyComingKey marks the context of a request whose body is still
// arriving from its client (WithBodyComing).
type bodyComingKey struct{}

// WithBodyComing marks the context of a request whose body has not all
// arrived from its client. Such a request goes through the fallback
// Transport, which reads the response while it writes the body: an
// upstream that answers before the body's end is answered at once, as
// Envoy relays it, not once the client has sent the rest (an inline
// exchange writes the whole request first).
func WithBodyComing(ctx context.Context) context.Context {
	return context.WithValue(ctx, bodyComingKey{}, true)
}

func bodyComing(ctx context.Context) bool { return ctx.Value(bodyComingKey{}) != nil }

// RoundTrip implements http.RoundTripper. It aborts when the request's
// context ends, including while the response body is read.
func (t *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if !inline(req) {
		return t.roundTripFallback(req)
	}
	ctx := req.Context()
	for retried := false; ; retried = true {
		pc, err := t.get(ctx, req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, stale, err := t.exchange(ctx, pc, req)
		if err == nil {
			return resp, nil
		}
		pc.close()
		// A keep-alive connection the upstream closed just as it was
		// reused: try once more on a new one if the request can be
		// sent again, as net/http's Transport does.
		if stale && pc.reused && !retried && ctx.Err() == nil && replayable(req) {
			if req.Body != nil && req.Body != http.NoBody {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

// roundTripFallback sends req through net/http's Transport, holding it
// to h1Client's rules: each response head bounded on its own (the
// Transport restarts its MaxResponseHeaderBytes at a 1xx only when a
// trace takes 1xx responses, as this one does: see the limits in
// docs/proxy.md for what it lets pass), a head framing a body its status
// cannot have refused (framingError; the Transport drops a 1xx head's
// Transfer-Encoding before any hook sees it, so only its Content-Length
// is checked), a 1xx taken passed on as exchange passes it, and a 101 to
// a request that asked no upgrade refused. A refused final head's
// connection is closed, not pooled. A head that fails after its first
// byte is the upstream's protocol error, as exchange has it (badHead);
// the Transport tells the first byte of the first head only, so after a
// 1xx only a head that does not parse is: one the connection's end cuts
// stays a connection termination here. A connect it starts for req ends
// with req (dialFallback, through dialOwnerKey).
func (t *h1Client) roundTripFallback(req *http.Request) (*http.Response, error) {
	got := interimOf(req.Context())
	rctx := req.Context()
	owner := func(f func()) func() bool { return context.AfterFunc(rctx, f) }
	var conn net.Conn     // set before the request is written, read once the response head came
	var use uint64        // the exchange's on conn (fallbackBusy), set with it
	var began atomic.Bool // a byte of the first head came, and no 1xx yet
	var later atomic.Bool // a 1xx came: the error is a later head's
	ctx := httptrace.WithClientTrace(context.WithValue(rctx, dialOwnerKey{}, owner), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			conn = i.Conn
			use = t.fallbackBusy(i.Conn)
		},
		PutIdleConn: func(err error) {
			if err == nil && conn != nil {
				t.fallbackIdle(conn, use) // the response's end, after GotConn's
			}
		},
		GotFirstResponseByte: func() { began.Store(true) },
		Got1xxResponse: func(status int, h textproto.MIMEHeader) error {
			began.Store(false)
			later.Store(true)
			if err := framingError(status, false, h); err != nil {
				return err // the Transport closes the connection
			}
			if got != nil {
				got(status)
			}
			return nil
		},
	})
	resp, err := t.fallback.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if req.Context().Err() == nil && (began.Load() && badHead(err) || later.Load() && !readFailure(err)) {
			err = &ProtocolError{err}
		}
		return nil, err
	}
	refuse := func(err error) (*http.Response, error) {
		_ = resp.Body.Close()
		if conn != nil {
			_ = conn.Close()
		}
		return nil, err
	}
	if err := responseFramingError(resp); err != nil {
		return refuse(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && req.Header.Get("Upgrade") == "" {
		return refuse(&ProtocolError{errors.New("upstream switched protocols without an upgrade request")})
	}
	if untilClose(resp) {
		resp.Body = untilCloseBody{resp.Body}
	}
	return resp, nil
}

// exchange writes req on pc and reads the response head. stale reports
// that the connection failed before any byte of a response arrived.
func (t *h1Client) exchange(ctx context.Context, pc *h1Conn, req *http.Request) (resp *http.Response, stale bool, err error) {
	stop := context.AfterFunc(ctx, pc.abort)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	// The request is written whole before the response is read (inline
	// bodies fit the socket buffers), so the write buffer is needed only
	// here: a pooled connection holds none.
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(pc.nc)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	if err != nil {
		return nil, true, err
	}
	// Each head, a 1xx's included, is bounded by route.MaxHeadBytes, as
	// Envoy's codec bounds it (max_response_headers_kb): one over it, or
	// one that does not parse, is the upstream's protocol error. So is a
	// head the upstream's close or reset cuts after its first byte
	// (badHead); before it, the connection's end is a termination.
	pc.limit.arm(pc.br.Buffered())
	for first := true; ; first = false {
		if _, err := pc.br.Peek(1); err != nil {
			pc.limit.disarm()
			if errors.Is(err, errHeadTooLarge) {
				return nil, false, &ProtocolError{err}
			}
			return nil, first, err
		}
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			pc.limit.disarm()
			if badHead(err) {
				err = &ProtocolError{err}
			}
			return nil, false, err
		}
		pc.limit.arm(pc.br.Buffered())
		if err := responseFramingError(resp); err != nil {
			pc.limit.disarm()
			return nil, false, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx informational: passed on to the request's WithInterim
		// (weft's roundTrip counts it, ends retries and the per-try
		// timeout, and drops it) and to whoever traces the request
		// (httputil.ReverseProxy forwards them), then the real response.
		if got := interimOf(ctx); got != nil {
			got(resp.StatusCode)
		}
		if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.Got1xxResponse != nil {
			if err := tr.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, false, err
			}
		}
	}
	pc.limit.disarm()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil, false, &ProtocolError{errors.New("upstream switched protocols without an upgrade request")}
	}
	b := &h1Body{t: t, pc: pc, rc: resp.Body, stop: stop, keep: !resp.Close && !req.Close, untilClose: untilClose(resp)}
	if resp.Body == http.NoBody {
		b.release(true)
		return resp, false, nil
	}
	resp.Body = b
	return resp, false, nil
}

// replayable is net/http's rule for resending a request on a new
// connection after a reused one failed.
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// h1Body is a response body read from a pooled connection. When it is read
// to the end of a response that allows keep-alive, the connection returns
// to the pool; otherwise it is closed. It is read and closed by one
// goroutine, as a response body is.
type h1Body struct {
	t    *h1Client
	pc   *h1Conn
	rc   io.ReadCloser // the body as http.ReadResponse frames it
	stop func() bool   // unregisters the context hook
	keep bool          // neither side asked to close the connection
	// untilClose: the body is delimited by the connection's end, which
	// its reset is too (connEnd).
	untilClose bool
	done       bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		if b.untilClose && connEnd(err) {
			err = io.EOF
		}
		b.release(err == io.EOF)
	}
	return n, err
}

// Arrived reports whether a read of the body would not wait for the
// upstream: bytes of it are buffered, or the socket has some (or its
// end) to read, checked without blocking. The forwarder flushes the
// response head ahead of a body that has not begun to come, and writes
// it with the body when it came along (httpconn's copyBody).
func (b *h1Body) Arrived() bool {
	if b.done {
		return true // the next read returns io.EOF at once
	}
	pc := b.pc
	return pc.br.Buffered() > 0 || pc.peek() != peekOpen
}

// Close ends the exchange. Before the end of the body it closes the
// connection instead of reading the rest, which may never end.
func (b *h1Body) Close() error {
	if !b.done {
		b.release(false)
	}
	return nil
}

func (b *h1Body) release(clean bool) {
	b.done = true
	// stop fails when the context hook ran (or is running): the
	// connection's deadline is poisoned and it cannot be reused.
	if b.stop() && clean && b.keep && b.pc.br.Buffered() == 0 {
		b.t.put(b.pc)
		return
	}
	b.pc.close()
}
