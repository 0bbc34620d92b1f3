package statebackup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeRaftFolder builds a folder shaped like a raft peer's state and returns it with its files' contents.
func makeRaftFolder(t *testing.T, parent string) (string, map[string]string) {
	t.Helper()
	files := map[string]string{
		"raft.db":                             strings.Repeat("bolt page ", 5000),
		"snapshots/2-11-1700000000/meta.json": `{"Index":11,"Term":2}`,
		"snapshots/2-11-1700000000/state.bin": "pinset snapshot",
		"peers.json":                          "",
	}
	dir := filepath.Join(parent, "raft")
	for name, content := range files {
		writeTestFile(t, filepath.Join(dir, name), []byte(content))
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// readTree returns every regular file under dir with its content, and every link with its target.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			out[rel] = "-> " + target
			return err
		case d.IsDir():
			if rel != "." {
				out[rel+"/"] = ""
			}
		default:
			b, err := os.ReadFile(p)
			out[rel] = string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestCopyAndRestoreFolderKeepsTheReplacedFolder(t *testing.T) {
	s := newTestStore(t)
	cfg := t.TempDir()
	raft, _ := makeRaftFolder(t, cfg)
	if err := os.Symlink("snapshots/2-11-1700000000", filepath.Join(raft, "latest")); err != nil {
		t.Fatal(err)
	}
	original := readTree(t, raft)
	m, err := s.CopyFolder(context.Background(), raft, Meta{Consensus: "raft", PlanID: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindStateFolder || m.Folder != "raft" || m.Pins != -1 || m.Source != raft {
		t.Fatalf("unexpected manifest %+v", m)
	}
	if _, err := s.Verify(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}

	// The peer ran on and its state changed; now it is restored from the copy.
	writeTestFile(t, filepath.Join(raft, "raft.db"), []byte("newer, broken state"))
	writeTestFile(t, filepath.Join(raft, "extra"), []byte("x"))
	changed := readTree(t, raft)
	if err := s.RestoreFolder(context.Background(), m.ID, raft); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, raft); !equalTrees(got, original) {
		t.Fatalf("restored folder differs:\n%v\nwant\n%v", got, original)
	}
	replaced, _ := filepath.Glob(raft + ".replaced-*")
	if len(replaced) != 1 {
		t.Fatalf("replaced folders: %v", replaced)
	}
	if got := readTree(t, replaced[0]); !equalTrees(got, changed) {
		t.Fatalf("the replaced folder was not kept as it was: %v", got)
	}
	info, err := os.Stat(filepath.Join(raft, "empty"))
	if err != nil || info.Mode().Perm() != 0o750 {
		t.Fatalf("folder mode not restored: %v, %v", info, err)
	}
	if entries, _ := os.ReadDir(cfg); len(entries) != 2 {
		t.Fatalf("config folder holds %d entries after restore, want raft and its replaced copy", len(entries))
	}

	// A second restore keeps both earlier folders.
	if err := s.RestoreFolder(context.Background(), m.ID, raft); err != nil {
		t.Fatal(err)
	}
	if replaced, _ := filepath.Glob(raft + ".replaced-*"); len(replaced) != 2 {
		t.Fatalf("after a second restore, replaced folders: %v", replaced)
	}
}

// After `state cleanup` moved raft/ away there is no folder to replace.
func TestRestoreFolderWhereNoneExists(t *testing.T) {
	s := newTestStore(t)
	raft, _ := makeRaftFolder(t, t.TempDir())
	original := readTree(t, raft)
	m, err := s.CopyFolder(context.Background(), raft, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(raft, raft+".old.0"); err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreFolder(context.Background(), m.ID, raft); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, raft); !equalTrees(got, original) {
		t.Fatalf("restored folder differs: %v", got)
	}
}

func TestDamagedArchiveFailsVerifyAndRestoreChangesNothing(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			s := newTestStore(t)
			cfg := t.TempDir()
			raft, _ := makeRaftFolder(t, cfg)
			m, err := s.CopyFolder(context.Background(), raft, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, filepath.Join(raft, "raft.db"), []byte("current state"))
			before, names := readTree(t, raft), listDir(t, cfg)
			d.apply(t, filepath.Join(s.Dir(), m.File))
			if _, err := s.Verify(context.Background(), m.ID); !errors.Is(err, ErrChecksum) {
				t.Fatalf("Verify err = %v, want ErrChecksum", err)
			}
			if err := s.RestoreFolder(context.Background(), m.ID, raft); !errors.Is(err, ErrChecksum) {
				t.Fatalf("RestoreFolder err = %v, want ErrChecksum", err)
			}
			if got := readTree(t, raft); !equalTrees(got, before) {
				t.Fatalf("a refused restore changed the folder: %v", got)
			}
			if got := listDir(t, cfg); strings.Join(got, ",") != strings.Join(names, ",") {
				t.Fatalf("a refused restore left files: %v, was %v", got, names)
			}
		})
	}
}

func TestRestoreRefusesExportsAndExportOutRefusesFolders(t *testing.T) {
	s := newTestStore(t)
	exp, err := s.LiveExport(context.Background(), &fakeStreamer{pins: syntheticPins(2)}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	raft, _ := makeRaftFolder(t, t.TempDir())
	folder, err := s.CopyFolder(context.Background(), raft, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreFolder(context.Background(), exp.ID, filepath.Join(t.TempDir(), "raft")); err == nil {
		t.Fatal("an export was restored as a folder")
	}
	if err := s.WriteExportTo(context.Background(), folder.ID, filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("a folder archive was written out as an export")
	}
}

func TestCopyFolderRefusals(t *testing.T) {
	s := newTestStore(t)
	parent := t.TempDir()
	file := filepath.Join(parent, "file")
	writeTestFile(t, file, []byte("x"))
	if _, err := s.CopyFolder(context.Background(), file, Meta{}); err == nil {
		t.Error("a file was copied as a folder")
	}
	if _, err := s.CopyFolder(context.Background(), filepath.Join(parent, "absent"), Meta{}); err == nil {
		t.Error("a missing folder was copied")
	}
	if _, err := s.CopyFolder(context.Background(), filepath.Dir(s.Dir()), Meta{}); err == nil {
		t.Error("the folder holding the store was copied into the store")
	}
	escaping := filepath.Join(parent, "pebble")
	writeTestFile(t, filepath.Join(escaping, "000001.sst"), []byte("x"))
	if err := os.Symlink("../file", filepath.Join(escaping, "out")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CopyFolder(context.Background(), escaping, Meta{}); err == nil {
		t.Error("a folder with a link pointing out of it was copied")
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("refused copies were stored: %v", list)
	}
	if names := listDir(t, s.Dir()); len(names) != 1 {
		t.Fatalf("refused copies left files: %v", names)
	}
}

func TestCopyFolderCancelledLeavesNothing(t *testing.T) {
	s := newTestStore(t)
	raft, _ := makeRaftFolder(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.CopyFolder(ctx, raft, Meta{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if names := listDir(t, s.Dir()); len(names) != 1 {
		t.Fatalf("a cancelled copy left files: %v", names)
	}
}

// tarEntry is one entry of a hand-made archive.
type tarEntry struct {
	name, body, link string
	typ              byte
}

// storeArchive puts a hand-made archive into s with a correct manifest, as if CopyFolder had made it.
func storeArchive(t *testing.T, s *Store, entries []tarEntry) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o600, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	id, created := s.newID(KindStateFolder, "raft")
	s.release(id)
	m := newManifest(id, KindStateFolder, created, Meta{})
	m.File, m.Folder, m.Pins = id+archiveExt, "raft", -1
	m.Size, m.SHA256 = int64(buf.Len()), sha256Hex(buf.Bytes())
	writeTestFile(t, filepath.Join(s.Dir(), m.File), buf.Bytes())
	if err := s.writeManifest(m); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRestoreRefusesUnsafeArchives(t *testing.T) {
	ok := tarEntry{name: "raft.db", body: "db", typ: tar.TypeReg}
	cases := []struct {
		name    string
		entries []tarEntry
		safe    bool
	}{
		{name: "plain folder", entries: []tarEntry{{name: "snapshots/", typ: tar.TypeDir}, ok,
			{name: "snapshots/1/meta.json", body: "{}", typ: tar.TypeReg},
			{name: "current", link: "snapshots/1", typ: tar.TypeSymlink}}, safe: true},
		{name: "parent path", entries: []tarEntry{ok, {name: "../evil", body: "x", typ: tar.TypeReg}}},
		{name: "parent inside path", entries: []tarEntry{{name: "a/../../evil", body: "x", typ: tar.TypeReg}}},
		{name: "absolute path", entries: []tarEntry{{name: "/tmp/evil", body: "x", typ: tar.TypeReg}}},
		{name: "dot entry", entries: []tarEntry{{name: "./raft.db", body: "x", typ: tar.TypeReg}}},
		{name: "absolute link", entries: []tarEntry{{name: "l", link: "/etc", typ: tar.TypeSymlink}}},
		{name: "link out", entries: []tarEntry{{name: "d/l", link: "../../x", typ: tar.TypeSymlink}}},
		{name: "link chain out", entries: []tarEntry{
			{name: "a", link: ".", typ: tar.TypeSymlink}, {name: "a/b", link: "..", typ: tar.TypeSymlink}}},
		{name: "file through a link", entries: []tarEntry{
			{name: "a", link: "snapshots", typ: tar.TypeSymlink}, {name: "a/f", body: "x", typ: tar.TypeReg}}},
		{name: "hard link", entries: []tarEntry{ok, {name: "h", link: "raft.db", typ: tar.TypeLink}}},
		{name: "char device", entries: []tarEntry{{name: "null", typ: tar.TypeChar}}},
		{name: "block device", entries: []tarEntry{{name: "sda", typ: tar.TypeBlock}}},
		{name: "fifo", entries: []tarEntry{{name: "pipe", typ: tar.TypeFifo}}},
		{name: "duplicate file", entries: []tarEntry{ok, ok}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t)
			cfg := t.TempDir()
			raft := filepath.Join(cfg, "raft")
			writeTestFile(t, filepath.Join(raft, "raft.db"), []byte("current"))
			id := storeArchive(t, s, tc.entries)
			_, verr := s.Verify(context.Background(), id)
			rerr := s.RestoreFolder(context.Background(), id, raft)
			if tc.safe {
				if verr != nil || rerr != nil {
					t.Fatalf("a safe archive was refused: verify %v, restore %v", verr, rerr)
				}
				return
			}
			if verr == nil || rerr == nil {
				t.Fatalf("an unsafe archive was accepted: verify %v, restore %v", verr, rerr)
			}
			if got := listDir(t, cfg); strings.Join(got, ",") != ".,raft,raft/raft.db" {
				t.Fatalf("a refused restore changed the config folder: %v", got)
			}
			outside := listDir(t, filepath.Dir(cfg))
			for _, n := range outside {
				if strings.Contains(n, "evil") {
					t.Fatalf("an entry escaped: %v", outside)
				}
			}
		})
	}
}

func TestRestoreNamesTheReplacedFolderByTime(t *testing.T) {
	clock := &stepClock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	s, err := Open(t.TempDir(), nil, WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	raft, _ := makeRaftFolder(t, t.TempDir())
	m, err := s.CopyFolder(context.Background(), raft, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreFolder(context.Background(), m.ID, raft); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(raft + ".replaced-20260301T100002Z"); err != nil {
		t.Fatal(err)
	}
}

// The copy is in every host's outage, so it is compressed at gzip's fastest
// level (see folderGzipLevel); gzip's header says which (XFL 4: fastest).
// Copies made at the default level by earlier releases read the same way.
func TestCopyFolderCompressesFastest(t *testing.T) {
	s := newTestStore(t)
	raft, _ := makeRaftFolder(t, t.TempDir())
	m, err := s.CopyFolder(context.Background(), raft, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(s.Dir(), m.File))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 10)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	if head[0] != 0x1f || head[1] != 0x8b {
		t.Fatalf("archive does not start as gzip: % x", head[:2])
	}
	if head[8] != 4 {
		t.Fatalf("gzip XFL = %d, want 4 (fastest compression)", head[8])
	}
}
