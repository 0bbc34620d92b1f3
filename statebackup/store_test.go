package statebackup

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestListIsNewestFirstAndIgnoresFilesWithoutManifest(t *testing.T) {
	s := newTestStore(t)
	var ids []string
	for i := range 3 {
		m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(i + 1)}, Meta{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	// What a crash leaves: a temporary file, and a data file whose manifest was never written.
	writeTestFile(t, filepath.Join(s.Dir(), ".tmp-x.ndjson.gz-123"), []byte("partial"))
	writeTestFile(t, filepath.Join(s.Dir(), "20990101T000000.000000000Z-live.ndjson.gz"), []byte("orphan"))
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.ID)
	}
	slices.Reverse(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("List = %v, want %v", got, ids)
	}
}

func TestCleanLeftoversRemovesOnlyOldLeftovers(t *testing.T) {
	s := newTestStore(t)
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(2)}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	old := []string{".tmp-a.ndjson.gz-1", "20250101T000000.000000000Z-live.ndjson.gz", "20250101T000000.000000000Z-folder-raft.tar.gz"}
	for _, name := range old {
		p := filepath.Join(s.Dir(), name)
		writeTestFile(t, p, []byte("x"))
		// The fake clock is in 2026; make these look an hour older than it.
		past := s.now().Add(-time.Hour)
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
	}
	young := filepath.Join(s.Dir(), ".tmp-b.ndjson.gz-2")
	writeTestFile(t, young, []byte("being written"))
	future := s.now().Add(time.Hour)
	if err := os.Chtimes(young, future, future); err != nil {
		t.Fatal(err)
	}
	removed, err := s.CleanLeftovers(10 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	slices.Sort(old)
	if !slices.Equal(removed, old) {
		t.Fatalf("removed %v, want %v", removed, old)
	}
	if _, err := os.Stat(young); err != nil {
		t.Fatalf("a file still being written was removed: %v", err)
	}
	if _, err := s.Verify(context.Background(), m.ID); err != nil {
		t.Fatalf("a real backup was damaged by cleaning: %v", err)
	}
}

func TestPrune(t *testing.T) {
	// Backups in creation order: plan a, a, b, none, b, none (newest last).
	plans := []string{"a", "a", "b", "", "b", ""}
	cases := []struct {
		name      string
		keep      int
		keepPlans []string
		removed   []int // indexes into plans
	}{
		{name: "keep all by count", keep: 6, removed: nil},
		{name: "keep newest two", keep: 2, removed: []int{3, 2, 1, 0}},
		{name: "keep none", keep: 0, removed: []int{5, 4, 3, 2, 1, 0}},
		{name: "keep newest one and plan a", keep: 1, keepPlans: []string{"a"}, removed: []int{4, 3, 2}},
		{name: "keep plans only", keep: 0, keepPlans: []string{"a", "b"}, removed: []int{5, 3}},
		{name: "unknown plan protects nothing", keep: 3, keepPlans: []string{"zzz"}, removed: []int{2, 1, 0}},
		{name: "empty plan ID is not a plan", keep: 0, keepPlans: []string{""}, removed: []int{5, 4, 3, 2, 1, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t)
			var ids []string
			for _, plan := range plans {
				m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(1)}, Meta{PlanID: plan})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, m.ID)
			}
			removed, err := s.Prune(tc.keep, tc.keepPlans)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, m := range removed {
				got = append(got, m.ID)
			}
			for _, i := range tc.removed {
				want = append(want, ids[i])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("removed %v, want %v", got, want)
			}
			list, _ := s.List()
			if len(list)+len(removed) != len(plans) {
				t.Fatalf("%d left + %d removed != %d", len(list), len(removed), len(plans))
			}
			for _, m := range removed {
				if _, err := os.Stat(filepath.Join(s.Dir(), m.File)); !os.IsNotExist(err) {
					t.Fatalf("data file of pruned backup %s still there: %v", m.ID, err)
				}
			}
		})
	}
}

func TestPruneRefusesANegativeCount(t *testing.T) {
	if _, err := newTestStore(t).Prune(-1, nil); err == nil {
		t.Fatal("Prune(-1) accepted")
	}
}

// Backups made at the same instant, even concurrently, get distinct IDs.
func TestIDsAreUniqueUnderAFrozenClock(t *testing.T) {
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(t.TempDir(), nil, WithClock(func() time.Time { return frozen }))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(5)}, Meta{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != 8 {
		t.Fatalf("List = %d backups, %v; want 8", len(list), err)
	}
	for _, m := range list {
		if _, err := s.Verify(context.Background(), m.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRefusesAnEmptyFolderName(t *testing.T) {
	if _, err := Open("", nil); err == nil {
		t.Fatal("Open(\"\") accepted")
	}
}
