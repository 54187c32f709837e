package evloop

import "time"

// The date header the loops send on every response that has none, as
// Envoy's connection manager does (its local replies, and proxied
// responses whose upstream sent no date; an upstream's own date is kept)
// and as the goroutine path's writers do.

// loopDate is a loop's current HTTP date, made once per second of the
// wall clock and only when a response needs it: responses that carry
// their upstream's date (most) never read the clock for it.
type loopDate struct {
	s     string
	until int64 // loop.now at which s is a second old; 0: never made
}

// date returns the HTTP date (RFC 9110 5.6.7) of the loop's current time
// (l.now): at most one allocation a second.
func (l *loop) date() string {
	if l.dt.until == 0 || l.now >= l.dt.until {
		t := time.Now().UTC()
		l.dt.s = t.Format("Mon, 02 Jan 2006 15:04:05 GMT")
		l.dt.until = l.now + int64(time.Second) - int64(t.Nanosecond())
	}
	return l.dt.s
}

// appendDate appends a date header line to an HTTP/1.1 head.
func (l *loop) appendDate(o []byte) []byte {
	o = append(o, "date: "...)
	o = append(o, l.date()...)
	return append(o, "\r\n"...)
}
