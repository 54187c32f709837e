package proxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestBodyArrivingRetryCreditsOnceSamePaths: an h2c client's POST whose
// body (900 KiB, within the windows) all comes while its first attempt's
// connect hangs (a host whose SYNs are dropped, connect_timeout 150 ms),
// and an HTTP/1.1 client's POST whose body comes in parts meanwhile, are
// retried to the healthy host beside it, HTTP/2 and HTTP/1.1
// clusters, on every path: 200 with the whole body, and the client's
// connection and stream windows are credited for each byte once, never
// twice (what the client may send never exceeds the window it was first
// given), never lost (a 3 MiB upload on the same connection afterwards
// completes). The loops push part of such a body into the connecting
// upstream's buffer, crediting the client, and keep the rest unpaid: the
// retry (h2uOpen's s.replayed) must credit only the latter.
func TestBodyArrivingRetryCreditsOnceSamePaths(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
	})
	h1up := httptest.NewServer(echo)
	t.Cleanup(h1up.Close)
	h2up := h2cUpstream(t, echo)
	hole := synDropAddr(t)
	clusters := []struct {
		name string
		h2   bool
		host string
	}{{"slow-h2", true, h2up}, {"slow-h1", false, strings.TrimPrefix(h1up.URL, "http://")}}
	body := bytes.Repeat([]byte("0123456789abcdef"), 900*1024/16)
	big := bytes.Repeat([]byte("x"), 3<<20)
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			res := []types.Resource{httpListener("egress", httpManager("egress", "rds"))}
			var routes []*routev3.Route
			for _, c := range clusters {
				r := routeTo("/"+c.name+"/", c.name)
				r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: u32(2),
					RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
				routes = append(routes, r)
				mods := []func(*clusterv3.Cluster){func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(150 * time.Millisecond) }}
				if c.h2 {
					mods = append(mods, h2Upstream)
				}
				res = append(res, edsCluster(c.name, mods...), cla(c.name, hole, c.host))
			}
			routes = append(routes, routeTo("/ok/", "ok"))
			res = append(res, edsCluster("ok", h2Upstream), cla("ok", h2up))
			h.push(append(res, routeConfig("rds", vhost("v", []string{"*"}, routes...)))...)
			cl := newCreditClient(t, h.addr("egress"))
			id := uint32(1)
			want := fmt.Sprintf("200 %d %x", len(body), sha256.Sum256(body))
			parts := [][]byte{body[:300<<10], body[300<<10 : 600<<10], body[600<<10:]}
			for _, c := range clusters {
				timeouts := h.stat("cluster." + c.name + ".upstream_cx_connect_timeout")
				for i := range 2 {
					path := fmt.Sprintf("/%s/h2c/%d", c.name, i)
					if got := cl.post(t, id, path, body); got != want {
						t.Errorf("POST %s: %.200q, want %q", path, got, want)
					}
					id += 2
					// An HTTP/1.1 client's body, in parts after its head,
					// comes while the connect hangs too: the loops keep what
					// they read of it in the attempt's output (up.unsent) or
					// its stream's replay, and hold the client.
					path = fmt.Sprintf("/%s/h1-chunked-%t/%d", c.name, i == 1, i)
					if got := postParts(t, h.addr("egress"), path, parts, i == 1); got != want {
						t.Errorf("POST %s: %.200q, want %q", path, got, want)
					}
				}
				if n := h.stat("cluster." + c.name + ".upstream_cx_connect_timeout"); n < timeouts+2 {
					t.Errorf("%s: %d attempts went to the host that drops SYNs, want 2 or more", c.name, n-timeouts)
				}
			}
			if got, want := cl.post(t, id, "/ok/big", big), fmt.Sprintf("200 %d %x", len(big), sha256.Sum256(big)); got != want {
				t.Errorf("POST /ok/big after the retries: %.200q, want %q", got, want)
			}
		})
	}
}

// creditClient is a raw h2c client that sends request bodies as the
// proxy's windows let it and checks that the proxy never gives it more
// window than it first did (a byte credited twice).
type creditClient struct {
	c        net.Conn
	fr       *http2.Framer
	hbuf     bytes.Buffer
	enc      *hpack.Encoder
	frames   chan http2.Frame
	conn     int64 // what the client may send on the connection
	connMax  int64 // the connection's window after the proxy's first WINDOW_UPDATE
	initial  int64 // SETTINGS_INITIAL_WINDOW_SIZE: each stream's window
	maxFrame int
}

func newCreditClient(t *testing.T, addr string) *creditClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	cl := &creditClient{c: c, fr: http2.NewFramer(c, c), frames: make(chan http2.Frame, 1024), conn: 65535, initial: 65535, maxFrame: 16384}
	cl.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cl.enc = hpack.NewEncoder(&cl.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = cl.fr.WriteSettings()
	// The proxy's SETTINGS, then its first connection WINDOW_UPDATE
	// (each path sends one at once, its window being above 65535).
	for cl.connMax == 0 {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			t.Fatalf("before the proxy's first WINDOW_UPDATE: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				cl.initial = int64(v)
			}
			_ = cl.fr.WriteSettingsAck()
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				cl.conn += int64(f.Increment)
				cl.connMax = cl.conn
			}
		}
	}
	go func() { // ends when the connection does (Cleanup closes it)
		defer close(cl.frames)
		for {
			f, err := cl.fr.ReadFrame()
			if err != nil {
				return
			}
			if mh, ok := f.(*http2.MetaHeadersFrame); ok {
				// The framer reuses its frames: a copy of what post reads.
				f = &http2.MetaHeadersFrame{HeadersFrame: mh.HeadersFrame, Fields: append([]hpack.HeaderField(nil), mh.Fields...)}
			} else if df, ok := f.(*http2.DataFrame); ok {
				cl.frames <- &dataCopy{id: df.StreamID, end: df.StreamEnded(), data: bytes.Clone(df.Data())}
				continue
			}
			cl.frames <- f
		}
	}()
	return cl
}

// dataCopy is a DATA frame's content, kept past the framer's next read.
type dataCopy struct {
	http2.Frame
	id   uint32
	end  bool
	data []byte
}

// post sends a POST of body on stream id, as fast as the windows let it,
// and returns the answer's status and body; it fails the test when the
// proxy credits more than it received.
func (cl *creditClient) post(t *testing.T, id uint32, path string, body []byte) string {
	t.Helper()
	cl.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	stream, off, status := cl.initial, 0, ""
	var resp []byte
	for {
		for off < len(body) && cl.conn > 0 && stream > 0 {
			n := min(len(body)-off, cl.maxFrame, int(min(cl.conn, stream)))
			if err := cl.fr.WriteData(id, off+n == len(body), body[off:off+n]); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			off += n
			cl.conn -= int64(n)
			stream -= int64(n)
		}
		f, ok := <-cl.frames
		if !ok {
			t.Fatalf("%s: the connection ended (%d of %d body bytes sent)", path, off, len(body))
		}
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			switch f.StreamID {
			case 0:
				cl.conn += int64(f.Increment)
				if cl.conn > cl.connMax {
					t.Errorf("%s: the proxy credited the connection past its window: %d, at most %d", path, cl.conn, cl.connMax)
				}
			case id:
				stream += int64(f.Increment)
				if stream > cl.initial {
					t.Errorf("%s: the proxy credited the stream past its window: %d, at most %d", path, stream, cl.initial)
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id && status == "" {
				status = f.PseudoValue("status")
			}
			if f.StreamID == id && f.StreamEnded() {
				return status + " " + string(resp)
			}
		case *dataCopy:
			if f.id != id {
				continue
			}
			resp = append(resp, f.data...)
			if len(f.data) > 0 {
				_ = cl.fr.WriteWindowUpdate(0, uint32(len(f.data)))
				_ = cl.fr.WriteWindowUpdate(id, uint32(len(f.data)))
			}
			if f.end {
				return status + " " + string(resp)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return fmt.Sprintf("RST_STREAM %v (%d of %d body bytes sent)", f.ErrCode, off, len(body))
			}
		case *http2.GoAwayFrame:
			return fmt.Sprintf("GOAWAY %v (%d of %d body bytes sent)", f.ErrCode, off, len(body))
		}
	}
}
