package route

import (
	"strings"
	"testing"
)

// TestReadIdleBytes: bytes an HTTP/1.1 upstream sends on an idle
// connection count in upstream_cx_protocol_error once they are a whole
// head (not a 408) or fail to parse, as Envoy's codec client counts them;
// a whole 408 head does not count, nor part of a head.
func TestReadIdleBytes(t *testing.T) {
	tests := []struct {
		name, b string
		want    IdleBytes
	}{
		{"nothing", "", IdlePartial},
		{"first byte", "H", IdlePartial},
		{"status line", "HTTP/1.1 408 Request Timeout\r\n", IdlePartial},
		{"a line cut", "HTTP/1.1 408 Request Timeout\r\nConnection: cl", IdlePartial},
		{"malformed but not whole", "HTTP/1.1 4x8 Request Timeout\r\n", IdlePartial},
		{"whole 408", "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", IdleRequestTimeout},
		{"whole 408 with its body", "HTTP/1.1 408 Request Timeout\r\nContent-Length: 2\r\n\r\nhi", IdleRequestTimeout},
		{"408 without reason", "HTTP/1.1 408\r\n\r\n", IdleRequestTimeout},
		{"408 over HTTP/1.0", "HTTP/1.0 408 Request Timeout\r\n\r\n", IdleRequestTimeout},
		{"408 with LF ends", "HTTP/1.1 408 Request Timeout\nConnection: close\n\n", IdleRequestTimeout},
		{"whole 200", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", IdleProtocolError},
		{"whole 100", "HTTP/1.1 100 Continue\r\n\r\n", IdleProtocolError},
		{"whole 503", "HTTP/1.1 503 Service Unavailable\r\n\r\n", IdleProtocolError},
		{"garbage", "garbage\r\n", IdleProtocolError},
		{"a first byte other than H", "x", IdleProtocolError},
		{"lower case", "http/1.1 408 Request Timeout\r\n\r\n", IdleProtocolError},
		{"HTTP/2 version", "HTTP/2.0 408 Request Timeout\r\n\r\n", IdleProtocolError},
		{"bad status", "HTTP/1.1 4x8 Request Timeout\r\n\r\n", IdleProtocolError},
		{"status below 100", "HTTP/1.1 040 Request Timeout\r\n\r\n", IdleProtocolError},
		{"no space after status", "HTTP/1.1 408Request Timeout\r\n\r\n", IdleProtocolError},
		{"header without colon", "HTTP/1.1 408 Request Timeout\r\nno colon\r\n\r\n", IdleProtocolError},
		{"header with a bad name", "HTTP/1.1 408 Request Timeout\r\nbad name: x\r\n\r\n", IdleProtocolError},
		{"header with no name", "HTTP/1.1 408 Request Timeout\r\n: x\r\n\r\n", IdleProtocolError},
		{"head past the limit", "HTTP/1.1 408 Request Timeout\r\nX: " + strings.Repeat("a", MaxHeadBytes) + "\r\n\r\n", IdleProtocolError},
		{"partial past the limit", "HTTP/1.1 408 Request Timeout\r\nX: " + strings.Repeat("a", MaxHeadBytes), IdleProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadIdleBytes([]byte(tt.b)); got != tt.want {
				t.Errorf("ReadIdleBytes(%.60q) = %d; want %d", tt.b, got, tt.want)
			}
		})
	}
}

// FuzzReadIdleBytes: a verdict, once given, is final: more bytes after
// them do not change it (the connection is closed at the verdict, and
// the bytes come in reads of any size).
func FuzzReadIdleBytes(f *testing.F) {
	f.Add([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n"), 10)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), 20)
	f.Add([]byte("HTTP/1.1 408 x\nA: b\n\n"), 3)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		whole := ReadIdleBytes(b)
		if cut < 0 || cut > len(b) {
			return
		}
		if first := ReadIdleBytes(b[:cut]); first != IdlePartial && first != whole {
			t.Fatalf("%q: %d, then %d with %q more", b[:cut], first, whole, b[cut:])
		}
	})
}
