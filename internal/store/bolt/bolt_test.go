package bolt

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

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

func TestNewerFormatRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weft.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(metaBucket).Put(formatKey, []byte(strconv.Itoa(store.FormatVersion+1)))
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer weft") {
		t.Fatalf("open of a store from a newer weft: %v, want a refusal naming a newer weft", err)
	}
}
