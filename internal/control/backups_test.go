package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/statebackup"
)

// plainBackend is a Backend without backups.
type plainBackend struct{}

func (plainBackend) Status() Status { return Status{} }
func (plainBackend) Announce(context.Context, []byte) (*plan.Announcement, *PlanAnswer, error) {
	return nil, nil, errors.New("no")
}
func (plainBackend) Republish(context.Context, []byte) error { return nil }
func (plainBackend) Approve(context.Context, []byte) (*plan.Plan, error) {
	return nil, errors.New("no plans here")
}
func (plainBackend) RepublishApproval(context.Context, []byte) error { return nil }
func (plainBackend) Plan(string) PlanAnswer                          { return PlanAnswer{} }
func (plainBackend) Changes() (<-chan struct{}, func())              { return nil, func() {} }

// backupBackend keeps one good backup, "good"; restoring "bad" is refused.
type backupBackend struct{ plainBackend }

var good = &statebackup.Manifest{ID: "good", Kind: statebackup.KindLiveExport, Pins: 7}

func (backupBackend) CreateBackup(context.Context) (*statebackup.Manifest, error) { return good, nil }
func (backupBackend) ListBackups() ([]*statebackup.Manifest, error) {
	return []*statebackup.Manifest{good}, nil
}
func (backupBackend) VerifyBackup(_ context.Context, id string) (*statebackup.Manifest, error) {
	if id != "good" {
		return nil, fmt.Errorf("%w: %s", statebackup.ErrNotFound, id)
	}
	return good, nil
}
func (backupBackend) RestoreBackup(_ context.Context, id string) (*RestoreReport, error) {
	if id == "bad" {
		return nil, fmt.Errorf("refusing to restore backup bad: %w", statebackup.ErrChecksum)
	}
	return &RestoreReport{Backup: good, Pins: 7, Restored: "state import of 7 pins"}, nil
}
func (backupBackend) PruneBackups(context.Context) (*PruneReport, error) {
	return &PruneReport{Removed: []*statebackup.Manifest{}, Kept: 1}, nil
}

func serve(t *testing.T, b Backend) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl") // short: a unix socket path is limited to about 100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	s, err := Listen(sock, b, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return NewClient(sock)
}

func TestBackupRoutes(t *testing.T) {
	ctx := context.Background()
	cl := serve(t, backupBackend{})
	if m, err := cl.CreateBackup(ctx); err != nil || m.ID != "good" {
		t.Fatalf("create: %v %v", m, err)
	}
	if list, err := cl.ListBackups(ctx); err != nil || len(list) != 1 || list[0].Pins != 7 {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := cl.VerifyBackup(ctx, "missing"); err == nil || !strings.Contains(err.Error(), "no such backup") {
		t.Fatalf("verify of a missing backup: %v", err)
	}
	if _, err := cl.RestoreBackup(ctx, "bad"); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("restore of a bad backup: %v, want the refusal", err)
	}
	if rep, err := cl.RestoreBackup(ctx, "good"); err != nil || rep.Pins != 7 {
		t.Fatalf("restore: %v %v", rep, err)
	}
	if rep, err := cl.PruneBackups(ctx); err != nil || rep.Kept != 1 {
		t.Fatalf("prune: %v %v", rep, err)
	}
}

func TestBackupRoutesWithoutBackupBackend(t *testing.T) {
	cl := serve(t, plainBackend{})
	if _, err := cl.ListBackups(context.Background()); err == nil || !strings.Contains(err.Error(), "keeps no backups") {
		t.Fatalf("list from a backend without backups: %v", err)
	}
	if _, err := cl.Status(context.Background()); err != nil {
		t.Fatalf("the other routes must still answer: %v", err)
	}
}
