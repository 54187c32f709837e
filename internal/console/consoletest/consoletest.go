// Package consoletest reads the console's event stream (GET /v1/events) as
// a test client: it asks for an encoding, counts the bytes on the wire,
// decodes gzip, and reads the snapshot to its end or event by event. The
// console's own tests, the server's and the browser tests of test/console
// read the stream with it.
package consoletest

import (
	"bufio"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Stream is one open event stream; the test's Cleanup closes it, which
// is after the test function's deferred calls: a test that closes its
// server in a defer (httptest.Server.Close waits for the stream's
// handler) closes Resp.Body first.
type Stream struct {
	Resp *http.Response
	// R reads the decoded stream; what UntilSnapshotEnd leaves comes next.
	R      *bufio.Reader
	wire   *counter
	events chan Event // Next's, from its first call
}

// Open GETs url (a /v1/events URL) with the test's context and
// Accept-Encoding enc ("gzip" or "identity": set, so that the client does
// not decode it itself), and fails t unless the answer is 200.
func Open(t testing.TB, url, enc string) *Stream {
	t.Helper()
	return OpenWith(t, http.DefaultClient, url, map[string]string{"Accept-Encoding": enc})
}

// OpenWith GETs url with client c (its cookies: a console session) and
// the headers hdr, and fails t unless the answer is 200.
func OpenWith(t testing.TB, c *http.Client, url string, hdr map[string]string) *Stream {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("x-amzn-ErrorType"))
	}
	s := &Stream{Resp: resp, wire: &counter{r: resp.Body}}
	var body io.Reader = s.wire
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(s.wire)
		if err != nil {
			t.Fatal(err)
		}
		body = zr
	}
	s.R = bufio.NewReaderSize(body, 1<<20)
	return s
}

// WireBytes is how many bytes have been read off the connection so far.
func (s *Stream) WireBytes() int { return s.wire.n }

// UntilSnapshotEnd reads the stream up to snapshot-end's data line, and
// returns the text read, that line included.
func (s *Stream) UntilSnapshotEnd(t testing.TB) string {
	t.Helper()
	var text strings.Builder
	for end := false; ; {
		line, err := s.R.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream, after %d bytes: %v", text.Len(), err)
		}
		text.WriteString(line)
		if end {
			return text.String()
		}
		end = line == "event: snapshot-end\n"
	}
}

// Event is one server-sent event: its type and its data line.
type Event struct{ Type, Data string }

// Next returns the stream's next event, failing t when none comes within
// wait or the stream ends. The first call starts a goroutine that reads
// R to its end: after it, read the stream only with Next.
func (s *Stream) Next(t testing.TB, wait time.Duration) Event {
	t.Helper()
	if s.events == nil {
		s.events = make(chan Event, 64)
		stop := make(chan struct{})
		t.Cleanup(func() { close(stop) })
		go s.readEvents(stop) // ends when the body ends or is closed (Open's Cleanup), or at stop
	}
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("the event stream ended")
		}
		return ev
	case <-time.After(wait):
		t.Fatalf("no event within %v", wait)
	}
	return Event{}
}

// readEvents parses R into events until it ends or stop is closed, then
// closes s.events.
func (s *Stream) readEvents(stop <-chan struct{}) {
	defer close(s.events)
	sc := bufio.NewScanner(s.R)
	sc.Buffer(nil, 16<<20)
	typ := ""
	for sc.Scan() {
		l := sc.Text()
		if v, ok := strings.CutPrefix(l, "event: "); ok {
			typ = v
		} else if v, ok := strings.CutPrefix(l, "data: "); ok {
			select {
			case s.events <- Event{typ, v}:
			case <-stop: // the test is over and reads no more
				return
			}
		}
	}
}

// counter counts the bytes read through it: the bytes on the wire.
type counter struct {
	r io.Reader
	n int
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
