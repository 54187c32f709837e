package evloop

import (
	"bufio"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestRequestOnRetiredChainIsLast: a request read on a chain that an update
// retired before its loop handled the retirement's wake-up (which can come
// later in the same batch of events; here it never comes: the flag is set
// alone) is its connection's last. It is answered with Connection: close,
// the connection then closes, and the drain is counted once. A request on
// a new connection of the chain that replaced it is served as usual.
func TestRequestOnRetiredChainIsLast(t *testing.T) {
	b := backend(t, "a")
	var chain atomic.Pointer[Chain]
	srv, st := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}},
		Classify: func(int) Accept { return Accept{Chain: chain.Load()} },
		HandOff:  func(fd int, _ []byte, _ Counted) { t.Errorf("connection %d handed off", fd) }})
	old := srv.NewChain(ChainConfig{StatPrefix: "old"})
	chain.Store(old)
	get := func(br *bufio.Reader, c io.Writer) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if resp := get(br, c); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before the update: %d, close %v", resp.StatusCode, resp.Close)
	}

	chain.Store(srv.NewChain(ChainConfig{StatPrefix: "new"}))
	old.g.retired.Store(true) // Retire without its wake-up
	if resp := get(br, c); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("on the retired chain: %d, close %v: want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection after its last response: read %d, %v; want EOF", n, err)
	}
	if v, _ := st.Value("http.old.downstream_cx_drain_close"); v != 1 {
		t.Errorf("http.old.downstream_cx_drain_close = %d, want 1", v)
	}

	c2 := dial(t, srv.Addr())
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	br2 := bufio.NewReader(c2)
	for range 2 {
		if resp := get(br2, c2); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("on the new chain: %d, close %v", resp.StatusCode, resp.Close)
		}
	}
	if v, _ := st.Value("http.new.downstream_rq_total"); v != 2 {
		t.Errorf("http.new.downstream_rq_total = %d, want 2", v)
	}
}
