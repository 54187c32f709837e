package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
)

// TestEvloopAccessLogStalledSink: a listener on the loops whose access
// log is a pipe nobody reads keeps serving (every request answered,
// none handed off); the lines past the sink's bound are dropped and
// counted in filesystem.write_dropped; once the pipe is read, the lines
// kept arrive whole and in request order, and kept + dropped is every
// request.
func TestEvloopAccessLogStalledSink(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	path := filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// The reader end is open from the start (the proxy's open of the
	// pipe does not wait for one) and not read until the requests are
	// done. Closed after the proxy has stopped (cleanups run last first).
	rfd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(rfd), path)
	t.Cleanup(func() { r.Close() })
	h := newHarness(t, func(c *Config) {
		c.Goroutines = false // this test is of the loops
		c.AccessLogBuffering = accesslog.Buffering{MaxBuffered: 16 << 10, FlushSize: 4 << 10}
	})
	ok := newBackend(t, "ok")
	// About 1 KB a line: 200 requests are three times the pipe's 64 KB
	// and the sink's bound.
	padded := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQ(:PATH)% %CONNECTION_ID% " + strings.Repeat("x", 1000) + "\n"}}
	h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(path, padded))),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "ok"))),
		edsCluster("ok"), cla("ok", ok.addr()))
	c, addr := newClient(t), h.addr("egress")
	const requests = 200
	for i := range requests {
		if resp, _, body := get(t, c, addr, "svc.local", "/n/"+strconv.Itoa(i)); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != 0 {
		t.Fatalf("on the loops %v, %d connections handed off", l.OnLoops(), l.HandedOff())
	}
	dropped := h.stat("filesystem.write_dropped")
	if dropped == 0 {
		t.Fatal("filesystem.write_dropped = 0 with the pipe full")
	}
	if err := syscall.SetNonblock(rfd, false); err != nil {
		t.Fatal(err)
	}
	var kept atomic.Int64
	failed := make(chan error, 1)
	go func() { // ends at EOF: the proxy closes the pipe when it stops
		sc := bufio.NewScanner(r)
		last := -1
		for sc.Scan() {
			p, rest, _ := bytes.Cut(sc.Bytes(), []byte(" "))
			n, err := strconv.Atoi(strings.TrimPrefix(string(p), "/n/"))
			if err != nil || n <= last || len(rest) < 1000 {
				failed <- fmt.Errorf("line %q after /n/%d: not whole or out of order", sc.Text()[:min(40, len(sc.Text()))], last)
				return
			}
			last = n
			kept.Add(1)
		}
	}()
	waitUntil(t, 10*time.Second, "the lines kept", func() bool {
		select {
		case err := <-failed:
			t.Fatal(err)
		default:
		}
		return kept.Load()+dropped == requests
	})
	if b := h.stat("filesystem.write_buffered"); b != kept.Load() {
		t.Fatalf("filesystem.write_buffered %d, %d lines read", b, kept.Load())
	}
}
