package evloop

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
)

// TestH2IdleMemory measures the Go heap an idle h2c client connection and
// an idle HTTP/2 upstream connection of a loop hold, over idleConns of
// each after one request on it (a client connection each to one upstream
// host; one client connection whose streams go to idleConns hosts, a
// connection each), answered without a body and with a full-size DATA
// frame. The test's peers are raw sockets with nothing on the heap per
// connection but their descriptors, so that the growth is the loop's. It
// logs the figures and fails past 8 KiB a connection, half a buffer:
// idle, neither holds a buffer, nor a Framer's grown by a full-size
// frame (lightenH2). With the full-size frame, the Framers kept 16 KiB
// each for the connection's life: 22-24 KB a client connection, 18.6 KB
// an upstream one (3.4-3.6 KB and 2.3-2.4 KB without a body).
func TestH2IdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 4,000 sockets")
	}
	const idleConns = 1000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	rc := routesToA(t)
	for _, c := range []struct {
		side string
		body int
	}{{"client", 0}, {"upstream", 0}, {"client", h2MaxFrame}, {"upstream", h2MaxFrame}} {
		side := c.side
		t.Run(fmt.Sprintf("%s/%d", side, c.body), func(t *testing.T) {
			// Sweeps (lightenH2) come every few milliseconds, not 15 s; set
			// back once the loop stopped (start's cleanup runs first).
			every := poolSweepEvery
			t.Cleanup(func() { poolSweepEvery = every })
			poolSweepEvery = 5 * time.Millisecond
			hosts := 1
			if side == "upstream" {
				hosts = idleConns + 1
			}
			ups := make([]*rawH2Host, hosts)
			addrs := make([]netip.AddrPort, hosts)
			for i := range ups {
				ups[i] = listenRawH2(t, c.body)
				addrs[i] = ups[i].addr
			}
			r := h2UpRouter{h2TestRouter: h2TestRouter{&ConfigRouter{Routes: rc, Hosts: map[string][]netip.AddrPort{"a": addrs}}}}
			srv, _ := start(t, Config{Loops: 1, Router: r, H2: true})
			proxy := netip.MustParseAddrPort(srv.Addr())
			var before uint64
			if side == "client" {
				for i := 0; i <= idleConns; i++ {
					c := dialRawH2(t, proxy)
					c.get(1, ups[0])
					if i == 0 {
						before = heap() // the upstream connection, and the loop's first of everything
					}
				}
			} else {
				c := dialRawH2(t, proxy)
				for i := 0; i <= idleConns; i++ {
					c.get(uint32(2*i+1), ups[(i+1)%hosts]) // ConfigRouter's round robin starts at the second host
					if i == 0 {
						before = heap()
					}
				}
			}
			// The sweep that renews what the connections keep comes within
			// a few milliseconds: up to a second, a collection each try.
			var per int64
			for range 100 {
				if per = (int64(heap()) - int64(before)) / idleConns; per <= 8<<10 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("Go heap in use per idle HTTP/2 %s connection of a loop: %d bytes (%d connections, a response of %d bytes each)", side, per, idleConns, c.body)
			if per > 8<<10 {
				t.Errorf("an idle HTTP/2 %s connection holds %d bytes of Go heap; want under 8 KiB", side, per)
			}
		})
	}
}

// rawH2Host is an HTTP/2 upstream played on raw sockets (blocking system
// calls, nothing on the heap per connection): each stream is answered 200
// with an empty body.
type rawH2Host struct {
	t    *testing.T
	body int // bytes of body in each response, in one DATA frame
	ln   int
	addr netip.AddrPort
	fd   int // the connection accepted, -1 before
}

func listenRawH2(t *testing.T, body int) *rawH2Host {
	t.Helper()
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ln) })
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 16); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	return &rawH2Host{t: t, body: body, ln: ln, addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port)), fd: -1}
}

// answer accepts the proxy's connection the first time, reads up to the
// next HEADERS and answers its stream.
func (h *rawH2Host) answer(buf []byte) {
	h.t.Helper()
	var out []byte
	if h.fd < 0 {
		fd, _, err := unix.Accept4(h.ln, unix.SOCK_CLOEXEC)
		if err != nil {
			h.t.Fatal(err)
		}
		h.fd = fd
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		h.t.Cleanup(func() { unix.Close(fd) })
		for n := 0; n < len(http2.ClientPreface); { // the proxy's preface
			m, err := unix.Read(fd, buf[:len(http2.ClientPreface)-n])
			if err != nil || m == 0 {
				h.t.Fatalf("read the preface: %d, %v", m, err)
			}
			n += m
		}
		out = append(out, 0, 0, 0, 4, 0, 0, 0, 0, 0) // SETTINGS
		out = append(out, 0, 0, 0, 4, 1, 0, 0, 0, 0) // its ACK of the proxy's
	}
	id := rawFrames(h.t, h.fd, buf, func(typ, flags byte, id uint32) bool { return typ == 1 })
	sid := []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	if h.body == 0 {
		out = append(append(out, 0, 0, 1, 1, 5), sid...)
		out = append(out, 0x88) // HEADERS :status 200, END_STREAM
	} else {
		out = append(append(out, 0, 0, 1, 1, 4), sid...)
		out = append(out, 0x88) // HEADERS :status 200
		out = append(append(out, byte(h.body>>16), byte(h.body>>8), byte(h.body), 0, 1), sid...)
		out = append(out, make([]byte, h.body)...) // DATA, END_STREAM
	}
	if _, err := unix.Write(h.fd, out); err != nil {
		h.t.Fatal(err)
	}
}

// rawH2Client is an h2c client on a raw socket.
type rawH2Client struct {
	t  *testing.T
	fd int
}

func dialRawH2(t *testing.T, to netip.AddrPort) rawH2Client {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) // a window update, then the next request: no Nagle wait
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}); err != nil {
		t.Fatal(err)
	}
	out := append([]byte(http2.ClientPreface), 0, 0, 0, 4, 0, 0, 0, 0, 0) // SETTINGS
	if _, err := unix.Write(fd, out); err != nil {
		t.Fatal(err)
	}
	return rawH2Client{t: t, fd: fd}
}

// get sends GET / on stream id, has up answer it and reads the answer.
func (c rawH2Client) get(id uint32, up *rawH2Host) {
	c.t.Helper()
	var buf [2 * h2MaxFrame]byte
	// :method GET, :scheme http, :path /, :authority x (without indexing).
	block := []byte{0x82, 0x86, 0x84, 0x01, 0x01, 'x'}
	out := append([]byte{0, 0, byte(len(block)), 1, 5, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}, block...)
	if id == 1 {
		out = append(out, 0, 0, 0, 4, 1, 0, 0, 0, 0) // ACK of the proxy's SETTINGS, which come first
	}
	if _, err := unix.Write(c.fd, out); err != nil {
		c.t.Fatal(err)
	}
	up.answer(buf[:])
	rawFrames(c.t, c.fd, buf[:], func(typ, flags byte, sid uint32) bool { return sid == id && flags&1 != 0 && (typ == 0 || typ == 1) })
	if n := up.body; n > 0 { // the connection's window back (the stream's ended)
		if _, err := unix.Write(c.fd, []byte{0, 0, 4, 8, 0, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}); err != nil {
			c.t.Fatal(err)
		}
	}
}

// rawFrames reads fd's frames into buf until done says one is the last
// wanted, and returns its stream id.
func rawFrames(t *testing.T, fd int, buf []byte, done func(typ, flags byte, id uint32) bool) uint32 {
	t.Helper()
	n := 0
	for {
		for n >= 9 {
			l := int(buf[0])<<16 | int(buf[1])<<8 | int(buf[2])
			if n < 9+l {
				break
			}
			typ, flags, id := buf[3], buf[4], uint32(buf[5]&0x7f)<<24|uint32(buf[6])<<16|uint32(buf[7])<<8|uint32(buf[8])
			n = copy(buf, buf[9+l:n])
			if done(typ, flags, id) {
				if n > 0 {
					t.Fatalf("%d bytes after the last frame wanted", n)
				}
				return id
			}
		}
		m, err := unix.Read(fd, buf[n:])
		if err != nil || m == 0 {
			t.Fatalf("read: %d, %v", m, err)
		}
		n += m
	}
}
