package bodychain

import (
	"bytes"
	"testing"
)

// TestWithinKeepsListInRoom: a chain given room keeps its first chunk's
// entry there (no list allocated), grows past it as usual, and starts
// in the room again once released and given it again.
func TestWithinKeepsListInRoom(t *testing.T) {
	var room [1][]byte
	var c Chain
	var fl freeList
	allocs := testing.AllocsPerRun(100, func() {
		c.Within(room[:])
		c.Append(&fl, []byte("abc"))
		c.Release(&fl)
		c = Chain{}
	})
	if allocs != 0 {
		t.Fatalf("a chain of one chunk within room allocated %v times per use, want 0", allocs)
	}
	body := bytes.Repeat([]byte("0123456789"), 4<<10) // three chunks: past the room
	c.Within(room[:])
	c.Append(&fl, body)
	if got := c.AppendTo(nil, 0); !bytes.Equal(got, body) {
		t.Fatalf("chain past its room holds %d bytes, want the %d appended", len(got), len(body))
	}
	c.Release(&fl)
}
