package daemon

// Scheduled backups and the backup commands of the control socket. Everything here that reads or changes the
// peer's state holds d.backupMu: a scheduled backup never reads a peer that a restore has stopped, and two
// restores never interleave.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/statebackup"
)

const (
	// retryCap bounds how long a skipped scheduled backup waits before it is tried again.
	retryCap = 30 * time.Second
	// leftoverAge is how old a temporary file of the backup folder must be before pruning removes it, so that
	// a backup being written right now (by a plan, or by another process) is never touched.
	leftoverAge = time.Hour
	// restoreImportTimeout bounds `state import` of a restore; a million pins take seconds, not minutes.
	restoreImportTimeout = 10 * time.Minute
	// restorePoll is how often a restore asks the restarted peer for its pin count.
	restorePoll = 250 * time.Millisecond
)

// untilDue says how long to wait before the next scheduled backup is due, given the newest live backup's time
// (zero when there is none): zero when one is due now.
func untilDue(now time.Time, interval time.Duration, last time.Time) time.Duration {
	if last.IsZero() {
		return 0
	}
	if wait := last.Add(interval).Sub(now); wait > 0 {
		return min(wait, interval) // a backup dated in the future (clock set back) must not stop the schedule
	}
	return 0
}

// skipReason says why a due scheduled backup is not taken now, in an operator's words, or "" to take it. A plan
// takes its own backups, and a peer whose API does not answer has no live pinset to read.
func skipReason(runningPlan string, peerErr error) string {
	switch {
	case runningPlan != "":
		return "plan " + runningPlan + " is running and takes its own backups"
	case peerErr != nil:
		return "the cluster peer's REST API does not answer (" + peerErr.Error() + ")"
	}
	return ""
}

// retryDelay is how long a skipped or failed scheduled backup waits before the next attempt.
func retryDelay(interval time.Duration) time.Duration { return min(interval, retryCap) }

// newestLive is the creation time of the newest live export among backups (zero if none): offline exports and
// folder copies are taken with the peer stopped and say nothing about the live pinset's latest state.
func newestLive(backups []*statebackup.Manifest) time.Time {
	var last time.Time
	for _, m := range backups {
		if m.Kind == statebackup.KindLiveExport && m.Created.After(last) {
			last = m.Created
		}
	}
	return last
}

// plansToKeep are the plans whose backups retention keeps whatever their age: the last plan (running or ended),
// since a rollback or a recovery after it reads them.
func plansToKeep(s *plan.State) []string {
	var ids []string
	for _, id := range []string{s.Current, s.Last} {
		if id != "" && (len(ids) == 0 || ids[0] != id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// runBackups takes a live backup every backups.interval until ctx ends, pruning after each. It never fails the
// daemon: a backup that cannot be taken is logged and tried again.
func (d *Daemon) runBackups(ctx context.Context) error {
	every := d.cfg.Backups.Interval
	if every <= 0 {
		d.log.Info("scheduled backups are off (backups.interval is 0s); every plan still takes its own")
		return nil
	}
	d.log.Info("scheduled backups on", zap.Duration("interval", every), zap.Int("keep", d.cfg.Backups.Keep))
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		t.Reset(d.scheduledBackup(ctx))
	}
}

// scheduledBackup takes the scheduled backup if one is due and returns how long to wait for the next attempt.
func (d *Daemon) scheduledBackup(ctx context.Context) time.Duration {
	every := d.cfg.Backups.Interval
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	store, err := d.backupStore()
	if err != nil {
		d.log.Error("scheduled backup: opening the backup store", zap.Error(err))
		return retryDelay(every)
	}
	list, err := store.List()
	if err != nil {
		d.log.Error("scheduled backup: listing backups", zap.Error(err))
		return retryDelay(every)
	}
	if wait := untilDue(time.Now(), every, newestLive(list)); wait > 0 {
		return wait
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	version, verr := d.api.Version(vctx)
	cancel()
	if reason := skipReason(d.runningPlan(), verr); reason != "" {
		d.log.Info("scheduled backup skipped; trying again later", zap.String("reason", reason),
			zap.Duration("retry_in", retryDelay(every)))
		return retryDelay(every)
	}
	m, err := d.liveBackup(ctx, store, version, "scheduled")
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("scheduled backup failed; trying again later", zap.Error(err), zap.Duration("retry_in", retryDelay(every)))
		}
		return retryDelay(every)
	}
	d.log.Info("scheduled backup taken and verified", zap.String("backup", m.ID), zap.Int("pins", m.Pins))
	if _, err := d.prune(store); err != nil {
		d.log.Warn("pruning backups after the scheduled one", zap.Error(err))
	}
	return every
}

func (d *Daemon) backupStore() (*statebackup.Store, error) {
	return statebackup.Open(d.cfg.BackupDir(), d.log)
}

// runningPlan is the id of the plan in progress, or "".
func (d *Daemon) runningPlan() string {
	var id string
	d.fsm.View(func(s *plan.State) {
		if p := s.CurrentPlan(); p != nil {
			id = p.ID
		}
	})
	return id
}

// liveBackup streams the running peer's pinset into a new backup and verifies it by reading it back.
func (d *Daemon) liveBackup(ctx context.Context, store *statebackup.Store, version, note string) (*statebackup.Manifest, error) {
	m, err := store.LiveExport(ctx, d.api, statebackup.Meta{ClusterVersion: version, PeerID: d.peerID,
		Consensus: d.svc.Consensus, Note: note})
	if err != nil {
		return nil, fmt.Errorf("backing up the live pinset: %w", err)
	}
	if _, err := store.Verify(ctx, m.ID); err != nil {
		return nil, fmt.Errorf("verifying the new backup %s: %w", m.ID, err)
	}
	return m, nil
}

// prune applies the retention and removes what crashed writes left behind. Called with backupMu held.
func (d *Daemon) prune(store *statebackup.Store) (*control.PruneReport, error) {
	var keepPlans []string
	d.fsm.View(func(s *plan.State) { keepPlans = plansToKeep(s) })
	removed, err := store.Prune(d.cfg.Backups.Keep, keepPlans)
	if err != nil {
		return nil, fmt.Errorf("pruning backups: %w", err)
	}
	if _, err := store.CleanLeftovers(leftoverAge); err != nil {
		d.log.Warn("removing leftovers of interrupted backups", zap.Error(err))
	}
	left, err := store.List()
	if err != nil {
		return nil, err
	}
	if removed == nil {
		removed = []*statebackup.Manifest{}
	}
	return &control.PruneReport{Removed: removed, Kept: len(left)}, nil
}

// CreateBackup implements control.BackupBackend.
func (d *Daemon) CreateBackup(ctx context.Context) (*statebackup.Manifest, error) {
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	version, err := d.api.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking the cluster peer its version (is it running?): %w", err)
	}
	return d.liveBackup(ctx, store, version, "requested by an operator")
}

// ListBackups implements control.BackupBackend.
func (d *Daemon) ListBackups() ([]*statebackup.Manifest, error) {
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	return store.List()
}

// VerifyBackup implements control.BackupBackend.
func (d *Daemon) VerifyBackup(ctx context.Context, id string) (*statebackup.Manifest, error) {
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	return store.Verify(ctx, id)
}

// PruneBackups implements control.BackupBackend.
func (d *Daemon) PruneBackups(_ context.Context) (*control.PruneReport, error) {
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	return d.prune(store)
}

// restoreJob is a restore whose every check passed: what remains changes the peer.
type restoreJob struct {
	store  *statebackup.Store
	m      *statebackup.Manifest
	export string // the decompressed export to import, for an export
	folder string // the state folder to replace, for a state-folder copy
}

// RestoreBackup implements control.BackupBackend. Everything that can refuse happens before the peer is stopped;
// after that the restore runs to its end even if the caller goes away, so the peer is never left stopped.
func (d *Daemon) RestoreBackup(ctx context.Context, id string) (*control.RestoreReport, error) {
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	start := time.Now()
	job, err := d.prepareRestore(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("refusing to restore backup %s, nothing was changed: %w", id, err)
	}
	if job.export != "" {
		defer os.Remove(job.export)
	}
	rep, err := d.applyRestore(context.WithoutCancel(ctx), job)
	if err != nil {
		return nil, fmt.Errorf("restoring backup %s: %w", id, err)
	}
	rep.Took = time.Since(start)
	d.log.Info("backup restored", zap.String("backup", id), zap.Int("pins", rep.Pins), zap.Duration("took", rep.Took))
	return rep, nil
}

// prepareRestore verifies the backup and readies what the restore needs, changing nothing of the peer's.
func (d *Daemon) prepareRestore(ctx context.Context, id string) (*restoreJob, error) {
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	m, err := store.Verify(ctx, id)
	if err != nil {
		return nil, err
	}
	if p := d.runningPlan(); p != "" {
		return nil, fmt.Errorf("plan %s is running; restore after it ends", p)
	}
	job := &restoreJob{store: store, m: m}
	if m.Kind == statebackup.KindStateFolder {
		if m.Folder == "" || !filepath.IsLocal(m.Folder) || filepath.Base(m.Folder) != m.Folder {
			return nil, fmt.Errorf("its manifest names the state folder %q, which is not a folder of the peer's config folder", m.Folder)
		}
		job.folder = filepath.Join(d.cfg.ClusterConfig, m.Folder)
		return job, nil
	}
	// Written out (and verified once more) before the stop, so a full disk refuses the restore instead of
	// leaving the peer stopped.
	dir := filepath.Join(d.cfg.StagingDir(), "restore")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	job.export = filepath.Join(dir, id+".ndjson")
	if err := store.WriteExportTo(ctx, id, job.export); err != nil {
		return nil, err
	}
	return job, nil
}

// applyRestore stops the peer through its runner (a supervised peer stopped behind the runner's back would be
// restarted), puts the backup in place, starts the peer and waits for the backup's pins.
func (d *Daemon) applyRestore(ctx context.Context, job *restoreJob) (*control.RestoreReport, error) {
	log := d.log.With(zap.String("backup", job.m.ID))
	sctx, cancel := context.WithTimeout(ctx, d.cfg.Runner.StopTimeout+10*time.Second)
	err := d.runner.Stop(sctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("stopping the peer: %w", err)
	}
	log.Info("peer stopped to restore a backup", zap.String("kind", string(job.m.Kind)))
	restored, aerr := d.putBackup(ctx, job)
	sctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	err = d.runner.Start(sctx, sidecar.StartOptions{})
	cancel()
	switch {
	case aerr != nil && err != nil:
		return nil, fmt.Errorf("%w; and starting the peer again: %w", aerr, err)
	case aerr != nil:
		return nil, fmt.Errorf("%w (the peer was started again)", aerr)
	case err != nil:
		return nil, fmt.Errorf("starting the peer after the restore: %w", err)
	}
	pins, err := d.waitPins(ctx, job.m.Pins)
	if err != nil {
		return nil, err
	}
	return &control.RestoreReport{Backup: job.m, Pins: pins, Restored: restored}, nil
}

// putBackup imports an export with the running version's binary, or swaps a state folder in, and says what it did.
func (d *Daemon) putBackup(ctx context.Context, job *restoreJob) (string, error) {
	if job.folder != "" {
		if err := job.store.RestoreFolder(ctx, job.m.ID, job.folder); err != nil {
			return "", err
		}
		return "state folder " + job.folder + " replaced (the previous one is kept beside it)", nil
	}
	bins, err := binstore.Open(d.cfg.BinDir())
	if err != nil {
		return "", fmt.Errorf("opening the binary store: %w", err)
	}
	ictx, cancel := context.WithTimeout(ctx, restoreImportTimeout)
	defer cancel()
	if err := (cluster.Binary{Path: bins.ServicePath()}).StateImport(ictx, d.cfg.ClusterConfig, job.export); err != nil {
		return "", fmt.Errorf("importing the backup: %w", err)
	}
	return fmt.Sprintf("state import of %d pins", job.m.Pins), nil
}

// errShortPinset is returned when a restored peer does not come back with the backup's pins in time.
var errShortPinset = errors.New("the restored peer did not come back with the backup's pins")

// waitPins waits, up to timeouts.verify, until the peer answers with at least want pins (only that it answers,
// for want < 0), and returns its count. At least rather than exactly: pins added to the cluster since the
// backup come back through consensus and are not a failure of the restore.
func (d *Daemon) waitPins(ctx context.Context, want int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeouts.Verify)
	defer cancel()
	tick := time.NewTicker(restorePoll)
	defer tick.Stop()
	var (
		n    int
		last error
	)
	for {
		n, last = d.api.PinCount(ctx)
		if last == nil && n >= want {
			return n, nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return n, fmt.Errorf("%w within %s: %w", errShortPinset, d.cfg.Timeouts.Verify, last)
			}
			return n, fmt.Errorf("%w within %s: it holds %d of %d", errShortPinset, d.cfg.Timeouts.Verify, n, want)
		case <-tick.C:
		}
	}
}
