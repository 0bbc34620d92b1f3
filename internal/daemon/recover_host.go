package daemon

// What one host does when a recovery asks: say what state it holds, clean its peer (keeping the old state),
// rebuild its peer from a copy, start it bootstrapped to the rebuilt one. Every step that changes the peer holds
// backupMu (no scheduled backup reads a stopped peer) and is journaled before and after, under the recovery's ID,
// with where the old state went.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/agent"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/statebackup"
)

// Journal steps of a recovery. Named apart from the plans' steps, so that a daemon restarting after a recovery
// does not take them for a plan left half done.
const (
	jRecoverClean   = "recover-clean"
	jRecoverRebuild = "recover-rebuild"
	jRecoverJoin    = "recover-join"
)

// recoverStateFolders are the folders of a cluster config folder that hold a live pinset.
var recoverStateFolders = []string{"raft", "pebble", "badger", "badger3", "leveldb"}

// isStateFolder tells the folders an inventory lists: live state, and what earlier cleanups and restores kept.
func isStateFolder(name string) bool {
	for _, f := range recoverStateFolders {
		if name == f || strings.HasPrefix(name, f+".replaced-") {
			return true
		}
	}
	return strings.HasPrefix(name, "raft.old.")
}

// inventory is what this host holds. It never fails: what cannot be read is said in the answer.
func (d *Daemon) inventory(ctx context.Context) statebackup.HostInventory {
	inv := statebackup.HostInventory{Host: d.node.ID().String(), ClusterPeer: d.peerID, Name: d.svc.PeerName,
		Consensus: d.svc.Consensus, Reachable: true, LivePins: -1, At: time.Now().UTC()}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	n, err := d.api.PinCount(pctx)
	if err == nil {
		inv.LivePins = n
		inv.Version, _ = d.api.Version(pctx)
	} else {
		inv.LiveError = err.Error()
	}
	cancel()
	if bins, err := binstore.Open(d.cfg.BinDir()); err == nil && inv.Version == "" {
		inv.Version, _ = bins.Current()
	}
	inv.Installed = listNames(filepath.Join(d.cfg.BinDir(), "versions"), func(fs.DirEntry) bool { return true })
	inv.Backups = d.verifiedBackups(ctx)
	inv.Folders = stateFolderInfos(d.cfg.ClusterConfig)
	inv.LastRecovery = d.lastRecovery()
	inv.Busy, _ = d.recoverBusy.Load().(string)
	return inv
}

// verifiedBackups lists the stored backups, each re-read: only a backup that verifies can be chosen.
func (d *Daemon) verifiedBackups(ctx context.Context) []statebackup.BackupInfo {
	store, err := d.backupStore()
	if err != nil {
		return nil
	}
	list, err := store.List()
	if err != nil {
		return nil
	}
	out := make([]statebackup.BackupInfo, 0, len(list))
	for _, m := range list {
		bi := statebackup.BackupInfo{Manifest: m, Verified: true}
		if _, err := store.Verify(ctx, m.ID); err != nil {
			bi.Verified, bi.Problem = false, err.Error()
		}
		out = append(out, bi)
	}
	return out
}

func listNames(dir string, keep func(fs.DirEntry) bool) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() && keep(e) {
			out = append(out, e.Name())
		}
	}
	return out
}

// stateFolderInfos sizes every state folder of the peer's config folder, with its newest file's time.
func stateFolderInfos(clusterDir string) []statebackup.FolderInfo {
	names := listNames(clusterDir, func(e fs.DirEntry) bool { return isStateFolder(e.Name()) })
	sort.Strings(names)
	out := make([]statebackup.FolderInfo, 0, len(names))
	for _, n := range names {
		fi := statebackup.FolderInfo{Name: n}
		_ = filepath.WalkDir(filepath.Join(clusterDir, n), func(_ string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil // a folder that cannot be read whole is still listed
			}
			if info, ierr := e.Info(); ierr == nil {
				if !e.IsDir() {
					fi.Size += info.Size()
				}
				if info.ModTime().After(fi.Modified) {
					fi.Modified = info.ModTime()
				}
			}
			return nil
		})
		out = append(out, fi)
	}
	return out
}

func (d *Daemon) recoveryJournal() (*agent.Journal, error) {
	return agent.OpenJournal(d.cfg.JournalDir())
}

// recoverClean stops the peer and moves its state aside: every state folder is copied to backups, then `state
// cleanup` runs (raft/ is kept as raft.old.N). Nothing is deleted that was not copied first.
func (d *Daemon) recoverClean(ctx context.Context, a stepArgs) (stepAnswer, error) {
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	j, err := d.recoveryJournal()
	if err != nil {
		return stepAnswer{}, err
	}
	if e, err := j.Load(a.Recovery); err == nil && e.Done(jRecoverClean) {
		// Asked again (a resumed recovery): the old state is already kept; the peer only has to be stopped.
		if err := d.stopForRecovery(ctx); err != nil {
			return stepAnswer{}, err
		}
		kept := map[string]string{"copies": e.Get(jRecoverClean, "copies"), "kept": e.Get(jRecoverClean, "kept")}
		return stepAnswer{Detail: keptDetail(kept) + " (by an earlier run of this step)"}, nil
	}
	if err := j.Begin(a.Recovery, jRecoverClean, nil); err != nil {
		return stepAnswer{}, err
	}
	if err := d.stopForRecovery(ctx); err != nil {
		return stepAnswer{}, err
	}
	kept, err := d.keepAndClean(ctx, a.Recovery)
	if err != nil {
		return stepAnswer{}, err
	}
	if err := j.Done(a.Recovery, jRecoverClean, kept); err != nil {
		return stepAnswer{}, err
	}
	d.log.Info("peer stopped and cleaned for the recovery; its old state is kept", zap.String("recovery", a.Recovery),
		zap.String("copies", kept["copies"]), zap.String("kept", kept["kept"]))
	return stepAnswer{Detail: keptDetail(kept)}, nil
}

func keptDetail(kept map[string]string) string {
	s := "stopped and cleaned; old state copied to backups " + orNone(kept["copies"])
	if kept["kept"] != "" {
		s += " and kept as " + kept["kept"]
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(there was none)"
	}
	return s
}

func (d *Daemon) stopForRecovery(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, d.cfg.Runner.StopTimeout+10*time.Second)
	defer cancel()
	if err := d.runner.Stop(sctx); err != nil {
		return fmt.Errorf("stopping the peer: %w", err)
	}
	return nil
}

// keepAndClean copies every live state folder to the backup store, then runs `state cleanup -f` with the
// installed binary, and says where everything went.
func (d *Daemon) keepAndClean(ctx context.Context, recovery string) (map[string]string, error) {
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	version, _ := d.installedVersion()
	meta := statebackup.Meta{ClusterVersion: version, PeerID: d.peerID, Consensus: d.svc.Consensus,
		Note: "state before recovery " + recovery}
	var copies []string
	for _, f := range recoverStateFolders {
		dir := filepath.Join(d.cfg.ClusterConfig, f)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		m, err := store.CopyFolder(ctx, dir, meta)
		if err != nil {
			return nil, fmt.Errorf("copying state folder %s before cleaning it: %w", f, err)
		}
		copies = append(copies, f+"="+m.ID)
	}
	before := stateFolderSet(d.cfg.ClusterConfig)
	if len(copies) > 0 {
		bins, err := binstore.Open(d.cfg.BinDir())
		if err != nil {
			return nil, fmt.Errorf("opening the binary store: %w", err)
		}
		if err := (cluster.Binary{Path: bins.ServicePath()}).StateCleanup(ctx, d.cfg.ClusterConfig); err != nil {
			return nil, fmt.Errorf("cleaning the peer's state: %w", err)
		}
	}
	var kept []string
	for f := range stateFolderSet(d.cfg.ClusterConfig) {
		if !before[f] {
			kept = append(kept, filepath.Join(d.cfg.ClusterConfig, f))
		}
	}
	sort.Strings(kept)
	return map[string]string{"copies": strings.Join(copies, ","), "kept": strings.Join(kept, ",")}, nil
}

func stateFolderSet(dir string) map[string]bool {
	out := map[string]bool{}
	for _, n := range listNames(dir, func(e fs.DirEntry) bool { return isStateFolder(e.Name()) }) {
		out[n] = true
	}
	return out
}

func (d *Daemon) installedVersion() (string, error) {
	bins, err := binstore.Open(d.cfg.BinDir())
	if err != nil {
		return "", err
	}
	return bins.Current()
}

// rebuildJob is a verified copy ready to be put in place.
type rebuildJob struct {
	store  *statebackup.Store
	m      *statebackup.Manifest
	export string // the decompressed export, for an export
}

// recoverRebuild puts the chosen copy into this host's peer and starts it alone. Everything that can refuse
// (exporting a live copy, verifying the backup, writing the export out) happens before the peer is stopped.
func (d *Daemon) recoverRebuild(ctx context.Context, a stepArgs) (stepAnswer, error) {
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	if ans, done, err := d.rebuildAgain(ctx, &a); done || err != nil {
		return ans, err
	}
	job, err := d.prepareRebuild(ctx, a)
	if err != nil {
		return stepAnswer{}, fmt.Errorf("readying the copy, nothing was changed: %w", err)
	}
	if job.export != "" {
		defer os.Remove(job.export)
	}
	j, err := d.recoveryJournal()
	if err != nil {
		return stepAnswer{}, err
	}
	if err := j.Begin(a.Recovery, jRecoverRebuild, map[string]string{"backup": job.m.ID}); err != nil {
		return stepAnswer{}, err
	}
	if err := d.stopForRecovery(ctx); err != nil {
		return stepAnswer{}, err
	}
	kept, err := d.keepAndClean(ctx, a.Recovery)
	if err != nil {
		return stepAnswer{}, err
	}
	put, err := d.putBackup(ctx, &restoreJob{store: job.store, m: job.m, export: job.export, folder: d.folderOf(job.m)})
	if err != nil {
		return stepAnswer{}, fmt.Errorf("%w (the peer is stopped; its old state is in %s)", err, keptDetail(kept))
	}
	ans, err := d.startAlone(ctx)
	if err != nil {
		return stepAnswer{}, err
	}
	kept["backup"], kept["addr"], kept["pins"] = job.m.ID, ans.Addr, strconv.Itoa(job.m.Pins)
	if err := j.Done(a.Recovery, jRecoverRebuild, kept); err != nil {
		return stepAnswer{}, err
	}
	ans.Pins = job.m.Pins
	ans.Detail = fmt.Sprintf("rebuilt from backup %s (%s) and started alone; before that the peer was %s", job.m.ID, put,
		keptDetail(kept))
	d.log.Info("peer rebuilt for the recovery", zap.String("recovery", a.Recovery), zap.String("backup", job.m.ID),
		zap.String("how", put))
	return ans, nil
}

// rebuildAgain handles a rebuild asked again by a resumed recovery. Done already: the peer is started if it does
// not run, and the earlier answer is given again. Begun and not done: the step died after the copy was stored as
// a verified backup (the live pinset it came from may be gone since, the peer was stopped and cleaned), so the
// rebuild goes on from that backup. Never begun: nothing to do here.
func (d *Daemon) rebuildAgain(ctx context.Context, a *stepArgs) (stepAnswer, bool, error) {
	j, err := d.recoveryJournal()
	if err != nil {
		return stepAnswer{}, false, err
	}
	e, err := j.Load(a.Recovery)
	if err != nil || !e.Begun(jRecoverRebuild) {
		return stepAnswer{}, false, err
	}
	backup := e.Get(jRecoverRebuild, "backup")
	if !e.Done(jRecoverRebuild) {
		if backup == "" {
			return stepAnswer{}, false, errors.New("an earlier run of this rebuild recorded no backup to go on from")
		}
		d.log.Warn("an earlier run of this rebuild stopped half way; going on from the backup it had stored",
			zap.String("recovery", a.Recovery), zap.String("backup", backup))
		a.Source = statebackup.Source{Host: a.Source.Host, Kind: statebackup.SourceBackup, Backup: backup}
		return stepAnswer{}, false, nil
	}
	st, err := d.runner.Status(ctx)
	if err != nil {
		return stepAnswer{}, false, fmt.Errorf("asking whether the rebuilt peer runs: %w", err)
	}
	ans := stepAnswer{Addr: e.Get(jRecoverRebuild, "addr")}
	if !st.Running {
		if ans, err = d.startAlone(ctx); err != nil {
			return stepAnswer{}, false, err
		}
	}
	ans.Pins, _ = strconv.Atoi(e.Get(jRecoverRebuild, "pins"))
	ans.Detail = fmt.Sprintf("rebuilt from backup %s by an earlier run of this step; the peer runs", backup)
	return ans, true, nil
}

// prepareRebuild turns the chosen source into a verified backup of this host (exporting the live pinset, or
// adding the operator's file, first) and writes an export out for `state import`.
func (d *Daemon) prepareRebuild(ctx context.Context, a stepArgs) (*rebuildJob, error) {
	store, err := d.backupStore()
	if err != nil {
		return nil, err
	}
	var m *statebackup.Manifest
	switch src := a.Source; src.Kind {
	case statebackup.SourceLive:
		version, verr := d.api.Version(ctx)
		if verr != nil {
			return nil, fmt.Errorf("the chosen live pinset's peer no longer answers: %w", verr)
		}
		m, err = d.liveBackup(ctx, store, version, "recovery "+a.Recovery+": the chosen live pinset")
		if err == nil && m.Pins < src.Pins {
			// A peer restarted since answers before its pinset is back (a raft peer without a majority: 0 pins).
			err = fmt.Errorf("the chosen live pinset now holds %d pins, %d when it was chosen: it is not rebuilt from; "+
				"run recover again", m.Pins, src.Pins)
		}
	case statebackup.SourceFile:
		version, _ := d.installedVersion()
		m, err = store.AddExport(ctx, src.File, statebackup.KindOfflineExport, statebackup.Meta{ClusterVersion: version,
			PeerID: d.peerID, Consensus: d.svc.Consensus, Note: "given to recover --from"})
		if err == nil {
			m, err = store.Verify(ctx, m.ID)
		}
	case statebackup.SourceBackup, statebackup.SourceFolder:
		m, err = store.Verify(ctx, src.Backup)
	default:
		return nil, fmt.Errorf("unknown kind of copy %q", src.Kind)
	}
	if err != nil {
		return nil, err
	}
	if m.Kind == statebackup.KindStateFolder {
		if d.folderOf(m) == "" {
			return nil, fmt.Errorf("backup %s names the state folder %q, which is not a folder of the peer's config folder", m.ID, m.Folder)
		}
		if isRaftCopy(m) {
			return &rebuildJob{store: store, m: m}, nil
		}
		// A datastore copy is read by the version that wrote it and imported as an export (recover_reader.go).
		if m, err = d.exportFolderCopy(ctx, store, m, a.Recovery); err != nil {
			return nil, err
		}
	}
	job := &rebuildJob{store: store, m: m}
	dir := filepath.Join(d.cfg.StagingDir(), "recover")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	job.export = filepath.Join(dir, m.ID+".ndjson")
	if err := store.WriteExportTo(ctx, m.ID, job.export); err != nil {
		return nil, err
	}
	return job, nil
}

// folderOf is where a state-folder copy goes back: raft.old.N and raft.replaced-... copies go back as raft/, the
// folder a peer reads. "" for an export or a name that is not a plain folder name.
func (d *Daemon) folderOf(m *statebackup.Manifest) string {
	if m.Kind != statebackup.KindStateFolder {
		return ""
	}
	name := m.Folder
	if name == "" || !filepath.IsLocal(name) || filepath.Base(name) != name {
		return ""
	}
	if strings.HasPrefix(name, "raft.") {
		name = "raft"
	}
	if i := strings.Index(name, ".replaced-"); i > 0 {
		name = name[:i]
	}
	return filepath.Join(d.cfg.ClusterConfig, name)
}

// startAlone starts the peer the ordinary way and waits until it says who it is, for the others to bootstrap to.
func (d *Daemon) startAlone(ctx context.Context) (stepAnswer, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := d.runner.Start(sctx, sidecar.StartOptions{})
	cancel()
	if err != nil {
		return stepAnswer{}, fmt.Errorf("starting the rebuilt peer: %w", err)
	}
	addr, err := d.waitClusterAddr(ctx)
	if err != nil {
		return stepAnswer{}, err
	}
	return stepAnswer{Addr: addr}, nil
}

// waitClusterAddr waits, up to timeouts.verify, for the peer's /id and returns a cluster address others can dial.
func (d *Daemon) waitClusterAddr(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeouts.Verify)
	defer cancel()
	tick := time.NewTicker(restorePoll)
	defer tick.Stop()
	var last error
	for {
		id, err := d.api.ID(ctx)
		if err == nil {
			for _, a := range id.Addresses {
				if strings.Contains(a, "/p2p/") && !strings.Contains(a, "/0.0.0.0/") {
					return a, nil
				}
			}
			err = errors.New("it lists no cluster address with /p2p/")
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the rebuilt peer did not say who it is within %s: %w", d.cfg.Timeouts.Verify, last)
		case <-tick.C:
		}
	}
}

// recoverJoin starts the cleaned peer with --bootstrap to the rebuilt one.
func (d *Daemon) recoverJoin(ctx context.Context, a stepArgs) (stepAnswer, error) {
	if a.Addr == "" {
		return stepAnswer{}, errors.New("no address of the rebuilt peer to bootstrap to")
	}
	d.backupMu.Lock()
	defer d.backupMu.Unlock()
	j, err := d.recoveryJournal()
	if err != nil {
		return stepAnswer{}, err
	}
	if e, err := j.Load(a.Recovery); err == nil && e.Done(jRecoverJoin) {
		if st, err := d.runner.Status(ctx); err == nil && st.Running {
			return stepAnswer{Detail: "started with --bootstrap " + e.Get(jRecoverJoin, "bootstrap") +
				" by an earlier run of this step; the peer runs"}, nil
		}
	}
	if err := j.Begin(a.Recovery, jRecoverJoin, map[string]string{"bootstrap": a.Addr}); err != nil {
		return stepAnswer{}, err
	}
	if err := d.stopForRecovery(ctx); err != nil { // a peer restarted behind the recovery's back must not stay
		return stepAnswer{}, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = d.runner.Start(sctx, sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", a.Addr}})
	cancel()
	if err != nil {
		return stepAnswer{}, fmt.Errorf("starting the peer bootstrapped to %s: %w", a.Addr, err)
	}
	if err := j.Done(a.Recovery, jRecoverJoin, nil); err != nil {
		return stepAnswer{}, err
	}
	return stepAnswer{Detail: "started with --bootstrap " + a.Addr}, nil
}
