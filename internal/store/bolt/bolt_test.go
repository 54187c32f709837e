package bolt

import (
	"path/filepath"
	"testing"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/storetest"
)

func TestStore(t *testing.T) {
	reopen := func(t *testing.T, s store.Store) store.Store {
		path := s.(*Store).db.Path()
		s.Close()
		s2, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
		return s2
	}
	storetest.Run(t, storetest.Factory{
		New: func(t *testing.T) store.Store {
			s, err := Open(filepath.Join(t.TempDir(), "weft.db"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Reopen: reopen,
		// bbolt keeps its watch history in memory: reopening loses it.
		Compact: reopen,
	})
}
