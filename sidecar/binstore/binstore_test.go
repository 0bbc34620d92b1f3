package binstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/upgraded/upgraded/sidecar/stage"
)

// stageVersion writes a fake pair of binaries whose content names the version.
func stageVersion(t *testing.T, version string, withCtl bool) stage.Binaries {
	t.Helper()
	dir := t.TempDir()
	b := stage.Binaries{Service: filepath.Join(dir, stage.ServiceName)}
	if err := os.WriteFile(b.Service, []byte("service "+version), 0o644); err != nil {
		t.Fatal(err)
	}
	if withCtl {
		b.Ctl = filepath.Join(dir, stage.CtlName)
		if err := os.WriteFile(b.Ctl, []byte("ctl "+version), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInstallLayoutAndIdempotence(t *testing.T) {
	s := open(t)
	b := stageVersion(t, "1.1.6", true)
	if err := s.Install("1.1.6", b); err != nil {
		t.Fatalf("Install: %v", err)
	}
	if !s.Has("1.1.6") || s.Has("1.0.8") {
		t.Fatal("Has disagrees with what was installed")
	}
	for name, want := range map[string]string{stage.ServiceName: "service 1.1.6", stage.CtlName: "ctl 1.1.6"} {
		p := filepath.Join(s.dir, "versions", "1.1.6", name)
		got, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(got) != want || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %q mode %v err %v", p, got, fi.Mode(), err)
		}
	}
	if err := s.Install("1.1.6", b); err != nil {
		t.Errorf("repeating an identical install: %v", err)
	}
	if err := s.Install("1.1.6", stageVersion(t, "other", true)); err == nil {
		t.Error("installing different bytes under an installed version succeeded")
	}
	if _, err := os.Stat(filepath.Join(s.dir, "versions", "1.1.6.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging folder left behind: %v", err)
	}
}

func TestInstallRefusals(t *testing.T) {
	s := open(t)
	for _, v := range []string{"", "../x", "a/b", ".hidden", "1.1.6.tmp"} {
		if err := s.Install(v, stageVersion(t, "x", false)); err == nil {
			t.Errorf("Install(%q) succeeded", v)
		}
	}
	if err := s.Install("1.1.6", stage.Binaries{Service: filepath.Join(t.TempDir(), "absent")}); err == nil {
		t.Error("Install of a missing binary succeeded")
	}
	if s.Has("1.1.6") {
		t.Error("a failed install left a version behind")
	}
	if names, _ := os.ReadDir(filepath.Join(s.dir, "versions")); len(names) != 0 {
		t.Errorf("versions/ holds %v after failed installs", names)
	}
}

func TestImportAdoptsHostBinaries(t *testing.T) {
	s := open(t)
	b := stageVersion(t, "1.0.8", false)
	if err := s.Import("1.0.8", b.Service, ""); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if _, err := s.Current(); !errors.Is(err, ErrNotLinked) {
		t.Fatalf("Current before Activate: %v, want ErrNotLinked", err)
	}
	if err := s.Activate("1.0.8"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.ServicePath())
	if err != nil || string(got) != "service 1.0.8" {
		t.Fatalf("ServicePath reads %q, %v", got, err)
	}
	// The store keeps its own copy: changing the original changes nothing.
	os.WriteFile(b.Service, []byte("replaced by a package manager"), 0o644)
	got, _ = os.ReadFile(s.ServicePath())
	if string(got) != "service 1.0.8" {
		t.Errorf("store copy followed the original: %q", got)
	}
	if _, err := os.Stat(s.CtlPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ctl present though none was imported: %v", err)
	}
}

func TestActivateAndRollback(t *testing.T) {
	s := open(t)
	for _, v := range []string{"1.0.8", "1.1.6"} {
		if err := s.Install(v, stageVersion(t, v, true)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Activate("9.9.9"); err == nil {
		t.Fatal("activating an uninstalled version succeeded")
	}
	steps := []struct {
		activate, current, previous string
	}{
		{"1.0.8", "1.0.8", ""},
		{"1.1.6", "1.1.6", "1.0.8"},
		{"1.1.6", "1.1.6", "1.0.8"}, // repeated: previous must stay the rollback target
		{"1.0.8", "1.0.8", "1.1.6"}, // rollback
	}
	for _, st := range steps {
		if err := s.Activate(st.activate); err != nil {
			t.Fatalf("Activate(%s): %v", st.activate, err)
		}
		cur, err := s.Current()
		if err != nil || cur != st.current {
			t.Errorf("after Activate(%s): current %q, %v; want %s", st.activate, cur, err, st.current)
		}
		prev, err := s.Previous()
		if st.previous == "" {
			if !errors.Is(err, ErrNotLinked) {
				t.Errorf("after Activate(%s): previous %q, %v; want none", st.activate, prev, err)
			}
		} else if prev != st.previous {
			t.Errorf("after Activate(%s): previous %q, %v; want %s", st.activate, prev, err, st.previous)
		}
		got, _ := os.ReadFile(s.ServicePath())
		if string(got) != "service "+st.current {
			t.Errorf("ServicePath reads %q", got)
		}
	}
	got, _ := os.ReadFile(s.ServicePathFor("1.1.6"))
	if string(got) != "service 1.1.6" {
		t.Errorf("ServicePathFor reads %q", got)
	}
}

// TestCurrentNeverMissing flips versions while a reader opens the current
// service binary as fast as it can: every open must succeed.
func TestCurrentNeverMissing(t *testing.T) {
	s := open(t)
	for _, v := range []string{"1.0.8", "1.1.6"} {
		if err := s.Install(v, stageVersion(t, v, false)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Activate("1.0.8"); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, failures atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(s.ServicePath())
			reads.Add(1)
			if err != nil || !strings.HasPrefix(string(b), "service ") {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("%v %q", err, b))
			}
		}
	}()
	for i := 0; i < 300; i++ {
		if err := s.Activate([]string{"1.1.6", "1.0.8"}[i%2]); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d reads failed, first: %v", failures.Load(), reads.Load(), firstFailure.Load())
	}
}

func TestRemoveRefusesLinkedVersions(t *testing.T) {
	s := open(t)
	for _, v := range []string{"1.0.8", "1.1.5", "1.1.6"} {
		if err := s.Install(v, stageVersion(t, v, false)); err != nil {
			t.Fatal(err)
		}
	}
	s.Activate("1.0.8")
	s.Activate("1.1.6")
	for _, v := range []string{"1.1.6", "1.0.8"} {
		if err := s.Remove(v); err == nil || !s.Has(v) {
			t.Errorf("Remove(%s) of a linked version: %v", v, err)
		}
	}
	if err := s.Remove("1.1.5"); err != nil || s.Has("1.1.5") {
		t.Errorf("Remove(1.1.5): %v, still there: %v", err, s.Has("1.1.5"))
	}
	if err := s.Remove("1.1.5"); err == nil {
		t.Error("removing a missing version succeeded")
	}
}

func TestOriginAndReplace(t *testing.T) {
	s := open(t)
	a := stageVersion(t, "1.1.6 build a", false).Service
	b := stageVersion(t, "1.1.6 build b", false).Service
	if err := s.Install("1.1.6", stage.Binaries{Service: a}); err != nil {
		t.Fatal(err)
	}
	if o, err := s.Origin("1.1.6"); err != nil || o != nil {
		t.Fatalf("a fresh install has origin %v %v, want none", o, err)
	}
	if err := s.SetOrigin("1.1.6", []string{"BB", "aa"}); err != nil {
		t.Fatal(err)
	}
	if o, err := s.Origin("1.1.6"); err != nil || len(o) != 2 || o[0] != "aa" || o[1] != "bb" {
		t.Fatalf("origin %v %v, want [aa bb]", o, err)
	}
	if err := s.Install("1.1.6", stage.Binaries{Service: b}); !errors.Is(err, ErrOtherContent) {
		t.Fatalf("installing other bytes under 1.1.6: %v, want ErrOtherContent", err)
	}
	if err := s.Replace("1.1.6", stage.Binaries{Service: b}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(s.ServicePathFor("1.1.6")); string(got) != "service 1.1.6 build b" {
		t.Fatalf("after Replace the binary holds %q", got)
	}
	if o, _ := s.Origin("1.1.6"); o != nil {
		t.Fatalf("Replace kept the old origin %v", o)
	}
	if err := s.Activate("1.1.6"); err != nil {
		t.Fatal(err)
	}
	if err := s.Replace("1.1.6", stage.Binaries{Service: a}); err == nil {
		t.Fatal("replacing the current version was accepted")
	}
	if got, _ := os.ReadFile(s.ServicePathFor("1.1.6")); string(got) != "service 1.1.6 build b" {
		t.Fatalf("a refused Replace changed the binary to %q", got)
	}
	if err := s.SetOrigin("9.9.9", nil); err == nil {
		t.Fatal("recording the origin of a version not installed was accepted")
	}
}
