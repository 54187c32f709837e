package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// h2WindowBody is what BenchmarkH2WindowDelayed moves each way.
const h2WindowBody = 32 << 20

// BenchmarkH2WindowDelayed moves one large body through one proxy over
// HTTP/2 with a delayed link on the hop whose flow-control window the
// proxy gives: a download (GET of h2WindowBody bytes) from an h2c
// upstream with the delay between the proxy and the upstream (the
// window the proxy gives the upstream), and an upload (POST of as many)
// from an h2c client with the delay between the client and the proxy
// (the window it gives the client); each at RTT 2 ms and 10 ms, on every
// path. The link is delayRelay: unlimited bandwidth, each chunk
// delivered RTT/2 after it was read, each way. A window of w caps a
// stream at about w per round trip. MB/s is the benchmark's (run with
// -benchtime 1x: one transfer).
func BenchmarkH2WindowDelayed(b *testing.B) {
	for _, p := range proxyPaths() {
		for _, dir := range []string{"download", "upload"} {
			for _, rtt := range []time.Duration{2 * time.Millisecond, 10 * time.Millisecond} {
				b.Run(fmt.Sprintf("%s/%s/rtt=%v", p.name, dir, rtt), func(b *testing.B) {
					h2WindowRun(b, p, dir == "upload", rtt)
				})
			}
		}
	}
}

// h2WindowRun is one of BenchmarkH2WindowDelayed's transfers.
func h2WindowRun(b *testing.B, p proxyPath, upload bool, rtt time.Duration) {
	big := make([]byte, h2WindowBody)
	up := h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		_, _ = w.Write(big)
	}))
	if !upload {
		up = delayRelay(b, up, rtt/2)
	}
	h := newHarness(b, p.on)
	rt := routeTo("/", "h2")
	rt.GetRoute().Timeout = durationpb.New(0)
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, rt)),
		edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
		cla("h2", up))
	addr := h.addr("egress")
	if upload {
		addr = delayRelay(b, addr, rtt/2)
	}
	c := h2cClient(b)
	b.SetBytes(h2WindowBody)
	b.ResetTimer()
	for range b.N {
		var resp *http.Response
		var err error
		if upload {
			resp, err = c.Post("http://"+addr+"/up", "application/octet-stream", &zeros{n: h2WindowBody})
		} else {
			resp, err = c.Get("http://" + addr + "/down")
		}
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2:
			b.Fatalf("HTTP/%d %d, %v", resp.ProtoMajor, resp.StatusCode, err)
		case upload && string(body) != strconv.Itoa(h2WindowBody), !upload && len(body) != h2WindowBody:
			b.Fatalf("%d bytes of body (%.20q)", len(body), body)
		}
	}
}

// zeros reads as n zero bytes.
type zeros struct{ n int }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	n := min(len(p), z.n)
	clear(p[:n])
	z.n -= n
	return n, nil
}

// delayRelay relays each connection it accepts to the address to, each
// chunk it reads delivered oneWay after it read it, in order, each way
// (a link of unlimited bandwidth and RTT 2*oneWay), until the test ends;
// it returns its address.
func delayRelay(tb testing.TB, to string, oneWay time.Duration) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() { // ends when Cleanup closes ln
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(u, c, oneWay) }() // ends when c's reads fail (closed by Cleanup at the latest)
			go func() { defer wg.Done(); delayCopy(c, u, oneWay) }() // ends when u's reads fail (likewise)
		}
	}()
	return ln.Addr().String()
}

// delayCopy writes to dst what src reads, each chunk oneWay after it was
// read, until src's reads fail; then it closes dst's writing side.
func delayCopy(dst, src net.Conn, oneWay time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	q := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() { // ends when q is closed (below, when src's reads fail)
		defer close(done)
		failed := false
		for c := range q {
			time.Sleep(time.Until(c.at))
			if !failed {
				_, err := dst.Write(c.b)
				failed = err != nil
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && !failed {
			_ = cw.CloseWrite()
		}
	}()
	for {
		b := make([]byte, 64<<10)
		n, err := src.Read(b)
		if n > 0 {
			q <- chunk{time.Now().Add(oneWay), b[:n]}
		}
		if err != nil {
			close(q)
			<-done
			return
		}
	}
}
