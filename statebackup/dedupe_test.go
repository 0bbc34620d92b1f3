package statebackup

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"testing"
)

// tinyDedupe makes the filter take over after 8 CIDs and fill up at once, so that nearly every CID after that is
// a suspect: the second read must then tell repeats from false positives.
var tinyDedupe = dedupeSize{exactLimit: 8, filterBits: 256}

func TestDedupeTellsRepeatsFromFalsePositives(t *testing.T) {
	for _, size := range []dedupeSize{defaultDedupe, tinyDedupe} {
		var cids []string
		for i := range 500 {
			cids = append(cids, syntheticCID(i))
		}
		// Repeats far from their first occurrence, in the exact phase and in the filter's.
		cids = append(cids, syntheticCID(3), syntheticCID(250), syntheticCID(499), syntheticCID(3))
		var export bytes.Buffer
		for _, c := range cids {
			export.WriteString(`{"cid":"` + c + `"}` + "\n")
		}
		open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(export.Bytes())), nil }
		n, err := countPinsOnce(size, open)
		if err != nil {
			t.Fatal(err)
		}
		if n != 500 {
			t.Fatalf("size %+v: %d distinct pins, want 500", size, n)
		}
	}
}

func TestLiveExportDropsRepeatsFoundOnlyByTheSecondRead(t *testing.T) {
	s := newTestStore(t)
	s.dedupe = tinyDedupe
	pins := syntheticPins(100)
	streamed := append(append([]json.RawMessage{}, pins...), pins[2], pins[60], pins[99], pins[60])
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: streamed}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Pins != 100 {
		t.Fatalf("pins = %d, want 100", m.Pins)
	}
	out := filepath.Join(t.TempDir(), "out.ndjson")
	if err := s.WriteExportTo(context.Background(), m.ID, out); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, out); !bytes.Equal(got, ndjson(pins)) {
		t.Fatalf("the export is not each pin once, in the order streamed:\n%s", got)
	}
	if names := listDir(t, s.Dir()); len(names) != 3 {
		t.Fatalf("files in the store: %v, want the export and its manifest (no first draft left)", names)
	}
}

func TestLiveExportWithOnlyFalsePositivesKeepsEveryPin(t *testing.T) {
	s := newTestStore(t)
	s.dedupe = tinyDedupe
	pins := syntheticPins(300)
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: pins}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Pins != 300 {
		t.Fatalf("pins = %d, want 300", m.Pins)
	}
	if _, err := s.Verify(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
}

// A stored export that repeats a pin far from its first occurrence, with a manifest counting the repeat, is
// refused: the repeat is a suspect for the filter, and the second read proves it.
func TestVerifyRefusesARepeatThatOnlyTheSecondReadFinds(t *testing.T) {
	s := newTestStore(t)
	s.dedupe = tinyDedupe
	pins := syntheticPins(200)
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: pins}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(ndjson(append(append([]json.RawMessage{}, pins...), pins[7]))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(s.Dir(), m.File), gz.Bytes())
	m.Pins, m.SHA256, m.Size = 201, sha256Hex(gz.Bytes()), int64(gz.Len())
	rewriteManifest(t, s, m)
	if _, err := s.Verify(context.Background(), m.ID); !errors.Is(err, ErrCountMismatch) {
		t.Fatalf("Verify err = %v, want ErrCountMismatch", err)
	}
	checkWriteOutRefused(t, s, m.ID, ErrCountMismatch)
}
