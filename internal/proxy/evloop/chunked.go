package evloop

// Where a chunked body ends (RFC 9112 7.1), found across reads without
// decoding it: the loops relay chunked bodies as they came, a request's
// to its upstream and a response's to its client (an h2 stream's
// response has its framing stripped by the same scanner).

import "errors"

// chunkScanner follows a chunked body across reads to find where it ends.
// It does not decode: the bytes are relayed as they are.
type chunkScanner struct {
	state int
	left  int64 // data bytes left in the current chunk
	size  int   // hex digits read in the size
	data  int64 // data bytes scanned, every chunk's (the body without its framing)
}

const (
	csSize     = iota // reading hex digits
	csExt             // chunk extension, until CR
	csSizeLF          // after CR of the size line
	csData            // data bytes
	csDataCR          // CR after data
	csDataLF          // LF after data
	csTrailer         // start of a trailer line (or the final CRLF)
	csTrailerL        // inside a trailer line
	csTrailerF        // LF of a trailer line
	csLastLF          // LF of the final CRLF
	csDone
)

var errChunk = errors.New("malformed chunked body")

// scan consumes b and returns how many bytes belong to the body, and
// whether the body ended within them.
func (c *chunkScanner) scan(b []byte) (int, bool, error) {
	for i := 0; i < len(b); i++ {
		ch := b[i]
		switch c.state {
		case csSize:
			switch {
			case ch >= '0' && ch <= '9', ch >= 'a' && ch <= 'f', ch >= 'A' && ch <= 'F':
				if c.size == 15 {
					return 0, false, errChunk
				}
				c.left = c.left<<4 | int64(unhex(ch))
				c.size++
			case ch == ';' || ch == ' ' || ch == '\t':
				if c.size == 0 {
					return 0, false, errChunk
				}
				c.state = csExt
			case ch == '\r':
				if c.size == 0 {
					return 0, false, errChunk
				}
				c.state = csSizeLF
			default:
				return 0, false, errChunk
			}
		case csExt:
			if ch == '\r' {
				c.state = csSizeLF
			} else if ch == '\n' {
				return 0, false, errChunk
			}
		case csSizeLF:
			if ch != '\n' {
				return 0, false, errChunk
			}
			if c.left == 0 {
				c.state = csTrailer
			} else {
				c.state = csData
			}
		case csData:
			n := min(int64(len(b)-i), c.left)
			c.left -= n
			c.data += n
			i += int(n) - 1
			if c.left == 0 {
				c.state = csDataCR
			}
		case csDataCR:
			if ch != '\r' {
				return 0, false, errChunk
			}
			c.state = csDataLF
		case csDataLF:
			if ch != '\n' {
				return 0, false, errChunk
			}
			c.state, c.size = csSize, 0
		case csTrailer:
			if ch == '\r' {
				c.state = csLastLF
			} else {
				c.state = csTrailerL
			}
		case csTrailerL:
			if ch == '\r' {
				c.state = csTrailerF
			} else if ch == '\n' {
				return 0, false, errChunk
			}
		case csTrailerF:
			if ch != '\n' {
				return 0, false, errChunk
			}
			c.state = csTrailer
		case csLastLF:
			if ch != '\n' {
				return 0, false, errChunk
			}
			c.state = csDone
			return i + 1, true, nil
		}
	}
	return len(b), false, nil
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
