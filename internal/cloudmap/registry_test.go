package cloudmap

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store/bolt"
)

func TestSortableIDs(t *testing.T) {
	r := NewRegistry(nil, Config{})
	base := time.Date(2026, 9, 30, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 50 {
		at := base.Add(time.Duration(i*i) * time.Millisecond)
		id, err := r.sortableID(at)
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 41 || id[32] != '-' {
			t.Fatalf("id %q is not shaped like an AWS operation id (32 characters, '-', 8)", id)
		}
		if got, ok := sortableTime(id); !ok || !got.Equal(at) {
			t.Fatalf("sortableTime(%q) = %v, want %v", id, got, at)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids made later do not sort later: %v", ids)
	}
}

// TestSortableIDsWithinAMillisecond: ids made in one millisecond, or
// after the clock stepped back, still sort in the order they were made
// (ListOperations lists oldest first by id).
func TestSortableIDsWithinAMillisecond(t *testing.T) {
	r := NewRegistry(nil, Config{})
	at := time.Date(2026, 9, 30, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 2000 {
		now := at
		if i >= 1000 {
			now = at.Add(-time.Second) // the clock stepped back
		}
		id, err := r.sortableID(now)
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 41 || id[32] != '-' {
			t.Fatalf("id %q is not shaped like an AWS operation id", id)
		}
		if got, ok := sortableTime(id); !ok || !got.Equal(at) {
			t.Fatalf("sortableTime(%q) = %v, want %v (the last millisecond used)", id, got, at)
		}
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			t.Fatalf("id %d %q sorts before or with the one made before it, %q", i, id, ids[len(ids)-1])
		}
		ids = append(ids, id)
	}
}

// TestRetention checks that operations and request ids are forgotten after
// the retention, by later writes.
func TestRetention(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	r := NewRegistry(st, Config{Now: func() time.Time { return now }, Retention: time.Hour})
	ctx := context.Background()
	create := func(name string) (*string, error) {
		out, err := checked(ctx, r.CreateHttpNamespace, &CreateHttpNamespaceRequest{Name: ptr(name), CreatorRequestId: ptr("token")})
		if err != nil {
			return nil, err
		}
		return out.OperationId, nil
	}
	first, err := create("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := create("b"); err == nil {
		t.Fatal("the request id reused for another request within the retention: no DuplicateRequest")
	}

	now = now.Add(time.Hour + time.Second)
	second, err := create("b") // its write prunes what the first left
	if err != nil {
		t.Fatalf("the request id reused after the retention: %v", err)
	}
	if _, err := checked(ctx, r.GetOperation, &GetOperationRequest{OperationId: first}); err == nil {
		t.Error("an operation older than the retention is still there")
	}
	if _, err := checked(ctx, r.GetOperation, &GetOperationRequest{OperationId: second}); err != nil {
		t.Errorf("the new operation: %v", err)
	}
}

// TestRetentionReusedID checks that pruning the first use of a request id
// does not forget a later use of it.
func TestRetentionReusedID(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	r := NewRegistry(st, Config{Now: func() time.Time { return now }, Retention: time.Hour})
	ctx := context.Background()
	create := func(name, token string) error {
		_, err := checked(ctx, r.CreateHttpNamespace, &CreateHttpNamespaceRequest{Name: ptr(name), CreatorRequestId: ptr(token)})
		return err
	}
	if err := create("a", "t"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour + time.Second)
	if err := create("b", "t"); err != nil { // reuses the expired id; its write may prune the first entry
		t.Fatal(err)
	}
	if err := create("c", "other"); err != nil { // and this one surely does
		t.Fatal(err)
	}
	if err := create("d", "t"); err == nil {
		t.Error("the second use of the request id was forgotten with the first")
	}
}
