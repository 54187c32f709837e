package evloop

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// abortObserver records what the loops tell the Observer of the requests
// they answer themselves (Aborted); the rest it ignores.
type abortObserver struct {
	mu      sync.Mutex
	aborted []string
}

func (o *abortObserver) Started(string, any)                            {}
func (o *abortObserver) Done(string, any, int, bool)                    {}
func (o *abortObserver) Head(string, any, proxyroute.ResponseHead) bool { return false }
func (o *abortObserver) GRPCDone(string, any, int)                      {}
func (o *abortObserver) Cut(string, any, bool)                          {}
func (o *abortObserver) Interim(string, any, int)                       {}
func (o *abortObserver) Connected(string, any, time.Duration) any       { return nil }
func (o *abortObserver) ConnectFailed(string, any)                      {}
func (o *abortObserver) Closed(any)                                     {}
func (o *abortObserver) Aborted(cluster string, code int, dropped bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.aborted = append(o.aborted, fmt.Sprintf("%s %d dropped %v", cluster, code, dropped))
}

// TestH2UpstreamOverflowDropped: a request the loops answer 503 because
// every connection to the HTTP/2 upstream they may open is at its
// SETTINGS_MAX_CONCURRENT_STREAMS (the pending-request overflow) is told
// to the Observer as dropped, as Envoy's router charges an overflow
// (Filter::onUpstreamReset: chargeUpstreamAbort with dropped, the
// cluster's upstream_rq_dropped, its load report's
// total_dropped_requests). It was told as a plain 503.
func TestH2UpstreamOverflowDropped(t *testing.T) {
	obs := &abortObserver{}
	srv, accept := startH2Up(t, func(c *Config) {
		c.Router = h1UpRouter{c.Router.(h2UpRouter)}
		c.AcceptHTTP10 = true // served by the loops: no HandOff
		c.Observer = obs
	})
	// Each upstream connection takes one stream at a time: each request,
	// held unanswered, opens a connection of its own, up to the bound.
	for range h2UpMaxConns {
		c := dial(t, srv.Addr())
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		u := accept(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
		u.request()
		// The proxy has applied the limit before the next request.
		if u.until(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() }) == nil {
			t.Fatal("upstream: closed before the SETTINGS ACK")
		}
	}
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || !strings.HasSuffix(string(body), "reset reason: overflow") {
		t.Fatalf("answered %d %q; want 503 for the overflow", resp.StatusCode, body)
	}
	obs.mu.Lock()
	got := strings.Join(obs.aborted, "; ")
	obs.mu.Unlock()
	if want := "a 503 dropped true"; got != want {
		t.Errorf("the Observer heard of aborted requests %q; want %q", got, want)
	}
}
