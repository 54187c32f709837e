// Package consoletest reads the console's event stream (GET /v1/events) as
// a test client: it asks for an encoding, counts the bytes on the wire,
// decodes gzip, and reads the snapshot to its end. The console's own tests
// and the browser tests of test/console read the stream with it.
package consoletest

import (
	"bufio"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Stream is one open event stream; the test's Cleanup closes it, which
// is after the test function's deferred calls: a test that closes its
// server in a defer (httptest.Server.Close waits for the stream's
// handler) closes Resp.Body first.
type Stream struct {
	Resp *http.Response
	// R reads the decoded stream; what UntilSnapshotEnd leaves comes next.
	R    *bufio.Reader
	wire *counter
}

// Open GETs url (a /v1/events URL) with the test's context and
// Accept-Encoding enc ("gzip" or "identity": set, so that the client does
// not decode it itself), and fails t unless the answer is 200.
func Open(t testing.TB, url, enc string) *Stream {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", enc)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s stream: %v", enc, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s stream: %s", enc, resp.Status)
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
