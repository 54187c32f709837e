package evloop

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTimerHeap: the heap gives the connections back in deadline order
// through random sets, moves and stops (the obvious version: a sort).
func TestTimerHeap(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		l := &loop{}
		ds := make([]*down, 1+rnd.IntN(40))
		for i := range ds {
			ds[i] = &down{}
		}
		want := map[*down]int64{}
		for range 3 * len(ds) {
			d := ds[rnd.IntN(len(ds))]
			if rnd.IntN(4) == 0 {
				l.stopTimer(d)
				delete(want, d)
				continue
			}
			at := rnd.Int64N(1000)
			l.setTimer(d, at)
			want[d] = at
		}
		var got, sorted []int64
		for _, at := range want {
			sorted = append(sorted, at)
		}
		slices.Sort(sorted)
		for len(l.timers) > 0 {
			d := l.timers[0]
			if d.tm.idx != 1 {
				t.Fatalf("round %d: the first entry has index %d", round, d.tm.idx)
			}
			got = append(got, d.tm.at)
			l.stopTimer(d)
		}
		if !slices.Equal(got, sorted) {
			t.Fatalf("round %d: popped %v, want %v", round, got, sorted)
		}
	}
}

// TestTimeoutsFireOnTime: the head, idle and request timeouts fire at
// their time, not at a periodic sweep's (which ran every second): each
// within 700 ms after it is due, a bound generous for a busy machine and
// below the sweep's second.
func TestTimeoutsFireOnTime(t *testing.T) {
	hang := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			return
		}
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(b.Close)
	t.Cleanup(func() { close(hang) })
	const (
		headers = 200 * time.Millisecond
		idle    = 300 * time.Millisecond
		request = 400 * time.Millisecond
		slack   = 700 * time.Millisecond
	)
	srv, st := start(t, Config{Loops: 1, HeadersTimeout: headers, IdleTimeout: idle, RequestTimeout: request,
		Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}}, Clusters: map[string][]string{"a": {hostOf(b)}}})
	for _, tc := range []struct {
		name, send, want string
		after            time.Duration
	}{
		{"head", "GET / HTTP/1.1\r\nHo", "HTTP/1.1 408 ", headers},
		{"idle", "", "", idle}, // after a request answered at once
		{"request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 504 ", request},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv.Addr())
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			if tc.send == "" {
				_, _ = io.WriteString(c, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("%v %v", resp, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
			}
			t0 := time.Now()
			_, _ = io.WriteString(c, tc.send)
			line, err := br.ReadString('\n')
			took := time.Since(t0)
			if !strings.HasPrefix(line, tc.want) || tc.want == "" && err != io.EOF {
				t.Fatalf("got %q %v, want %q", line, err, tc.want)
			}
			// Not early either (the idle timeout runs from the last byte
			// read, a little before the client's t0).
			if took < tc.after-50*time.Millisecond || took > tc.after+slack {
				t.Errorf("fired after %v, want %v (at most %v late)", took, tc.after, slack)
			}
		})
	}
	// The route timeout is the cluster's, as the goroutine path counts it.
	if v, _ := st.Value("cluster.a.upstream_rq_timeout"); v != 1 {
		t.Errorf("cluster.a.upstream_rq_timeout = %d, want 1", v)
	}
}

// BenchmarkTimersPerRequest: what the timers cost a request on a loop
// with 16 keep-alive connections (the bench's 1,000 requests/s): arm at
// the request's start (its timeout comes first), arm at its end (nothing
// moves earlier), and the expiry check after the loop's events.
func BenchmarkTimersPerRequest(b *testing.B) {
	l, ds := benchTimerLoop(&generation{headers: DefaultHeadersTimeout, idle: DefaultIdleTimeout, streamIdle: DefaultStreamIdleTimeout})
	u := &up{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d := ds[i%len(ds)]
		l.now += int64(time.Millisecond)
		d.last, d.reqStart, d.rtFrom, d.u = l.now, l.now, l.now, u
		l.arm(d)
		l.expireTimers()
		d.u = nil
		l.arm(d)
		l.expireTimers()
	}
}

// benchTimerLoop is a loop with the default timeouts and 16 keep-alive
// connections of generation gen, each armed.
func benchTimerLoop(gen *generation) (*loop, []*down) {
	l := &loop{srv: &Server{cfg: Config{HeadersTimeout: DefaultHeadersTimeout, IdleTimeout: DefaultIdleTimeout,
		RequestTimeout: DefaultRequestTimeout, ConnectTimeout: DefaultConnectTimeout}}}
	ds := make([]*down, 16)
	for i := range ds {
		// As dispatch sets them for the common route (15 s, the
		// connection manager's 5 min stream idle timeout).
		ds[i] = &down{gen: gen, timeout: int64(DefaultRequestTimeout), idle: int64(gen.streamIdle)}
		l.arm(ds[i])
	}
	return l, ds
}

// BenchmarkTimersPerRequestBody is BenchmarkTimersPerRequest for a
// request whose body ends in a later event than its head: armed at the
// head for the stream idle timeout (the route timeout waits for the
// body's end), then again at the body's end (reqComplete: the route
// timeout moves it earlier), then at the request's end.
func BenchmarkTimersPerRequestBody(b *testing.B) {
	l, ds := benchTimerLoop(&generation{headers: DefaultHeadersTimeout, idle: DefaultIdleTimeout, streamIdle: DefaultStreamIdleTimeout})
	u := &up{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d := ds[i%len(ds)]
		l.now += int64(time.Millisecond)
		d.last, d.reqStart, d.rtFrom, d.bodyIn, d.u = l.now, l.now, l.now, true, u
		l.arm(d)
		l.expireTimers()
		l.reqComplete(d)
		l.expireTimers()
		d.u = nil
		l.arm(d)
		l.expireTimers()
	}
}
