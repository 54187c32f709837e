package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestH2ConnProtocolReset: h2Conn finds the RST_STREAM PROTOCOL_ERROR
// x/net's client writes for a malformed response, and nothing else,
// however the writes cut the frames: after the preface, a SETTINGS, a
// HEADERS, DATA whose payload holds what reads as such a reset, a
// WINDOW_UPDATE whose payload is that code, resets with other codes and a
// GOAWAY PROTOCOL_ERROR, only the last frame's end reports it.
func TestH2ConnProtocolReset(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82, 0x86}, EndHeaders: true})
	var fake bytes.Buffer
	_ = http2.NewFramer(&fake, nil).WriteRSTStream(1, http2.ErrCodeProtocol)
	_ = fr.WriteData(1, false, fake.Bytes())
	_ = fr.WriteWindowUpdate(1, uint32(http2.ErrCodeProtocol)) // a 4-byte payload of the same bytes
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = fr.WriteRSTStream(3, http2.ErrCodeNo)
	_ = fr.WriteGoAway(0, http2.ErrCodeProtocol, nil)
	clean := b.Len()
	_ = fr.WriteRSTStream(5, http2.ErrCodeProtocol)
	all := b.Bytes()
	for _, size := range []int{1, 2, 3, 5, 7, 9, 13, 64, len(all)} {
		w := newH2Conn(nil, nil)
		found := -1
		for off := 0; off < len(all); off += size {
			end := min(off+size, len(all))
			if w.protocolReset(all[off:end]) && found < 0 {
				found = end
			}
		}
		if found != len(all) {
			t.Errorf("writes of %d bytes: reset found at byte %d, want %d (the frames before end at %d)", size, found, len(all), clean)
		}
	}
}

// TestH2FailedConnTakesNoStream: between a connection's failure for the
// upstream's protocol error and x/net's reader seeing it closed, the pool
// gives the next request another connection, as Envoy, which closes the
// failed one before it routes another request; the pool handed the failed
// one out, and the request was answered as if it had been on it.
func TestH2FailedConnTakesNoStream(t *testing.T) {
	addr, _ := h2Upstream(t, okHandler)
	c := h2Cluster(t, addr, 1024, 1024)
	req, _ := http.NewRequestWithContext(WithHost(context.Background(), c.Hosts()[0]), "GET", "http://"+addr+"/", nil)
	cc, err := c.h2pool.GetClientConn(req, addr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	c.h2pool.mu.Lock()
	w := c.h2pool.wires[cc]
	c.h2pool.mu.Unlock()
	if w == nil {
		t.Fatal("the pooled connection's wire is not known")
	}
	w.failed.Store(true) // as fail() sets it, before it closes the connection
	next, err := c.h2pool.GetClientConn(req, addr)
	if err != nil {
		t.Fatal(err)
	}
	if next == cc {
		t.Error("the failed connection took the next request's stream")
	}
}

// TestH2ConnFailSendsNothing: fail, which runs under x/net's write lock,
// closes a TLS connection under its TLS layer: the upstream gets no
// close_notify, and fail does not wait for an upstream that reads
// nothing (crypto/tls gives the alert's write 5 s). Here the upstream's
// end of a pipe reads only after fail began: it must see the connection
// end, not an alert that fail is still writing.
func TestH2ConnFailSendsNothing(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	leaf := ca.Issue(t, []string{"up"}).TLS(t)
	cEnd, sEnd := net.Pipe()
	srv := tls.Server(sEnd, &tls.Config{Certificates: []tls.Certificate{leaf}})
	cl := tls.Client(cEnd, &tls.Config{ServerName: "up", RootCAs: ca.Pool()})
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }() // ends with the handshake
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	c := h2Cluster(t, "127.0.0.1:1", 1, 1)
	w := newH2Conn(c, cl)
	done := make(chan struct{})
	go func() { w.fail(); close(done) }() // ends when fail returns
	b := make([]byte, 64)
	n, err := sEnd.Read(b)
	<-done
	if n > 0 || !errors.Is(err, io.EOF) {
		t.Errorf("the upstream read %d bytes (%x), %v; want the connection's end and nothing sent", n, b[:n], err)
	}
	if got := c.Stats.CxProtocolError.Value(); got != 1 {
		t.Errorf("upstream_cx_protocol_error %d, want 1", got)
	}
}
