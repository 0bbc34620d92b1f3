package statebackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// damage describes a way a stored file goes bad.
type damage struct {
	name  string
	apply func(t *testing.T, path string)
}

var damages = []damage{
	{name: "truncated", apply: func(t *testing.T, path string) {
		data := readFile(t, path)
		writeTestFile(t, path, data[:len(data)*2/3])
	}},
	{name: "one flipped byte", apply: func(t *testing.T, path string) {
		data := readFile(t, path)
		data[len(data)/2] ^= 0x01
		writeTestFile(t, path, data)
	}},
	{name: "one flipped byte in the gzip trailer", apply: func(t *testing.T, path string) {
		data := readFile(t, path)
		data[len(data)-6] ^= 0x80
		writeTestFile(t, path, data)
	}},
}

func TestDamagedExportFailsVerifyAndIsNotWrittenOut(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			s := newTestStore(t)
			m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(200)}, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			d.apply(t, filepath.Join(s.Dir(), m.File))
			if _, err := s.Verify(context.Background(), m.ID); !errors.Is(err, ErrChecksum) {
				t.Fatalf("Verify err = %v, want ErrChecksum", err)
			}
			checkWriteOutRefused(t, s, m.ID, ErrChecksum)
		})
	}
}

// checkWriteOutRefused checks that WriteExportTo fails with want and neither replaces an existing destination
// nor leaves anything beside it.
func checkWriteOutRefused(t *testing.T, s *Store, id string, want error) {
	t.Helper()
	dir := t.TempDir()
	dst := filepath.Join(dir, "import.ndjson")
	writeTestFile(t, dst, []byte("previous content\n"))
	if err := s.WriteExportTo(context.Background(), id, dst); !errors.Is(err, want) {
		t.Fatalf("WriteExportTo err = %v, want %v", err, want)
	}
	if got := readFile(t, dst); string(got) != "previous content\n" {
		t.Fatalf("destination changed by a refused write: %q", got)
	}
	if names := listDir(t, dir); len(names) != 2 {
		t.Fatalf("files left beside the destination: %v", names)
	}
}

func TestManifestWithAnotherCountIsRefused(t *testing.T) {
	for _, delta := range []int{+1, -1} {
		s := newTestStore(t)
		m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(10)}, Meta{})
		if err != nil {
			t.Fatal(err)
		}
		m.Pins += delta
		rewriteManifest(t, s, m)
		if _, err := s.Verify(context.Background(), m.ID); !errors.Is(err, ErrCountMismatch) {
			t.Fatalf("Verify with pins %+d: err = %v, want ErrCountMismatch", delta, err)
		}
		checkWriteOutRefused(t, s, m.ID, ErrCountMismatch)
	}
}

func rewriteManifest(t *testing.T, s *Store, m *Manifest) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(s.Dir(), m.ID+".json"), data)
}

func TestVerifyReportsAMissingFile(t *testing.T) {
	s := newTestStore(t)
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(3)}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.Dir(), m.File)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(context.Background(), m.ID); !errors.Is(err, ErrMissing) {
		t.Fatalf("Verify err = %v, want ErrMissing", err)
	}
	checkWriteOutRefused(t, s, m.ID, ErrMissing)
}

// A file that was stored corrupt from the start (its checksum matches the manifest) still fails: the content is
// read, not only hashed.
func TestVerifyReadsTheContentNotOnlyTheChecksum(t *testing.T) {
	s := newTestStore(t)
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(3)}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), m.File)
	garbage := bytes.Repeat([]byte("not gzip"), 10)
	writeTestFile(t, path, garbage)
	m.SHA256, m.Size = sha256Hex(garbage), int64(len(garbage))
	rewriteManifest(t, s, m)
	_, err = s.Verify(context.Background(), m.ID)
	if err == nil || errors.Is(err, ErrChecksum) {
		t.Fatalf("Verify err = %v, want a content error", err)
	}
}

func TestVerifyUnknownIDs(t *testing.T) {
	s := newTestStore(t)
	for _, id := range []string{"", "nope", "../backups", "a/b", ".json", ".tmp-x"} {
		if _, err := s.Verify(context.Background(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Verify(%q) err = %v, want ErrNotFound", id, err)
		}
	}
}

// A manifest edited to point at a file outside its backup is not a manifest.
func TestManifestPointingElsewhereIsIgnored(t *testing.T) {
	s := newTestStore(t)
	m, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(3)}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	m.File = "../../etc/passwd"
	rewriteManifest(t, s, m)
	if _, err := s.Get(m.ID); err == nil {
		t.Fatal("a manifest naming a file outside the store was accepted")
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("List = %v, %v; want the bad manifest skipped", list, err)
	}
}
