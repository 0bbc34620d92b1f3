package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/sidecar/stage"
	"github.com/upgraded/upgraded/statebackup"
)

// prepare stages the target binaries and takes a verified live backup. Nothing
// is stopped: a failure here fails the plan with the cluster untouched.
func (a *Agent) prepare(ctx context.Context, p *plan.Plan) error {
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	if j.Done(jPrepare) { // done before a restart, or the report has not landed yet
		a.reportPrepared(p.ID, j)
		return nil
	}
	log := a.log.With(zap.String("plan", p.ID), zap.String("step", jPrepare))
	if err := a.cfg.Journal.Begin(p.ID, jPrepare, nil); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	from, err := a.currentVersion(ctx)
	if err != nil {
		return a.fail(p.ID, plan.StepFailed, fmt.Errorf("finding the running version: %w", err))
	}
	a.report(p.ID, func(hp *plan.HostProgress) {
		hp.Step, hp.FromVersion, hp.Version, hp.Detail = plan.StepPreparing, from, from, "fetching and verifying artifacts"
	})
	if err := a.stage(ctx, p); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	data := map[string]string{}
	if p.Procedure == plan.Auto {
		if err := a.learnRPC(ctx, p, data); err != nil {
			return a.fail(p.ID, plan.StepFailed, err)
		}
	}
	if err := a.learnCapabilities(ctx, p, data); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	a.report(p.ID, func(hp *plan.HostProgress) { hp.Detail = "backing up the pinset from the running peer" })
	m, err := a.liveBackup(ctx, p.ID, from, "before upgrade")
	if err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	log.Info("prepared: binaries staged and verified, pinset backed up",
		zap.String("from", from), zap.String("to", p.Version), zap.Int("pins", m.Pins), zap.String("backup", m.ID))
	data["from"], data["backup"], data["backup_pins"] = from, m.ID, strconv.Itoa(m.Pins)
	if err := a.cfg.Journal.Done(p.ID, jPrepare, data); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	j, err = a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	a.reportPrepared(p.ID, j)
	return nil
}

func (a *Agent) reportPrepared(planID string, j *Entries) {
	pins, _ := strconv.Atoi(j.Get(jPrepare, "backup_pins"))
	from := j.Get(jPrepare, "from")
	a.report(planID, func(hp *plan.HostProgress) {
		hp.Step, hp.FromVersion, hp.Version, hp.BackupPins, hp.Pins, hp.Error = plan.StepPrepared, from, from, pins, pins, ""
		hp.RPCRunning, hp.RPCStaged = j.Get(jPrepare, "rpc_running"), j.Get(jPrepare, "rpc_staged")
		hp.Detail = "binaries staged, pinset backed up and verified"
	})
}

// learnRPC records the RPC protocol of the running peer and of the staged
// binary, from which an auto plan chooses its procedure.
func (a *Agent) learnRPC(ctx context.Context, p *plan.Plan, data map[string]string) error {
	a.report(p.ID, func(hp *plan.HostProgress) { hp.Detail = "learning the RPC protocol of " + p.Version })
	id, err := a.cfg.API.ID(ctx)
	if err != nil {
		return fmt.Errorf("asking the running peer its RPC protocol: %w", err)
	}
	staged, err := a.probeRPC(ctx, a.cfg.Bins.ServicePathFor(p.Version), a.stagingDir(p.ID))
	if err != nil {
		// Not fatal: without the staged protocol the plan falls back to the
		// procedure that never mixes versions, and the real start decides.
		a.log.Warn("could not learn the staged binary's RPC protocol; the plan will not upgrade one peer at a time",
			zap.String("plan", p.ID), zap.Error(err))
		staged = ""
	}
	data["rpc_running"], data["rpc_staged"] = id.RPCProtocolVersion, staged
	a.log.Info("RPC protocols known", zap.String("plan", p.ID), zap.String("running", id.RPCProtocolVersion), zap.String("staged", staged))
	return nil
}

// learnCapabilities records whether the staged binary has `state upgrade` and
// a meaningful `daemon --upgrade`, so that the switch does not spend the
// peer's downtime running the new binary's help three times.
func (a *Agent) learnCapabilities(ctx context.Context, p *plan.Plan, data map[string]string) error {
	bin := cluster.Binary{Path: a.cfg.Bins.ServicePathFor(p.Version), Env: a.cfg.BinaryEnv}
	caps, err := bin.Capabilities(ctx)
	if err != nil {
		return fmt.Errorf("detecting what %s supports: %w", p.Version, err)
	}
	data["state_upgrade"], data["daemon_upgrade"] = strconv.FormatBool(caps.StateUpgrade), strconv.FormatBool(caps.DaemonUpgrade)
	return nil
}

// stagedCapabilities are those recorded at preparation, or detected now from
// the active binary when the journal predates that record.
func (a *Agent) stagedCapabilities(ctx context.Context, p *plan.Plan, j *Entries) (cluster.Capabilities, error) {
	su, du := j.Get(jPrepare, "state_upgrade"), j.Get(jPrepare, "daemon_upgrade")
	if su != "" && du != "" {
		return cluster.Capabilities{StateUpgrade: su == "true", DaemonUpgrade: du == "true"}, nil
	}
	caps, err := cluster.Binary{Path: a.cfg.Bins.ServicePath(), Env: a.cfg.BinaryEnv}.Capabilities(ctx)
	if err != nil {
		return caps, fmt.Errorf("detecting what %s supports: %w", p.Version, err)
	}
	return caps, nil
}

// stage fetches every artifact, checks its sha256, unpacks it, checks that the
// service binary says it is the target version, and installs it beside the current one.
func (a *Agent) stage(ctx context.Context, p *plan.Plan) error {
	if a.cfg.Images != nil {
		return a.stageImage(ctx, p)
	}
	want := make([]string, 0, len(p.Artifacts))
	for _, art := range p.Artifacts {
		want = append(want, art.SHA256)
	}
	want = binstore.NormalizeDigests(want)
	if a.cfg.Bins.Has(p.Version) {
		// Reuse an installed copy only if it came from exactly the artifacts
		// this plan announced: a number alone may name other bytes (a failed
		// build rolled back earlier, a rebuilt release, an imported binary).
		origin, err := a.cfg.Bins.Origin(p.Version)
		switch {
		case err != nil:
			a.log.Warn("cannot tell where the installed copy of the target version came from; fetching the announced artifacts",
				zap.String("plan", p.ID), zap.String("version", p.Version), zap.Error(err))
		case slices.Equal(origin, want):
			if err := stage.VerifyVersion(ctx, a.cfg.Bins.ServicePathFor(p.Version), p.Version); err == nil {
				a.log.Info("target version already installed on this host from the same artifacts", zap.String("plan", p.ID), zap.String("version", p.Version))
				return nil
			}
		default:
			a.log.Info("the installed copy of the target version did not come from the announced artifacts; fetching them",
				zap.String("plan", p.ID), zap.String("version", p.Version))
		}
	}
	dir := a.stagingDir(p.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating staging folder: %w", err)
	}
	files, err := a.fetchArtifacts(ctx, p, dir)
	if err != nil {
		return err
	}
	bins, err := stage.Unpack(ctx, files, filepath.Join(dir, "unpacked"))
	if err != nil {
		return fmt.Errorf("unpacking artifacts: %w", err)
	}
	if err := stage.VerifyVersion(ctx, bins.Service, p.Version); err != nil {
		return fmt.Errorf("checking the staged binary: %w", err)
	}
	err = a.cfg.Bins.Install(p.Version, bins)
	if errors.Is(err, binstore.ErrOtherContent) {
		a.log.Warn("replacing the installed copy of the target version with the bytes of the announced artifacts",
			zap.String("plan", p.ID), zap.String("version", p.Version))
		err = a.cfg.Bins.Replace(p.Version, bins)
	}
	if err != nil {
		return fmt.Errorf("installing version %s: %w", p.Version, err)
	}
	if err := a.cfg.Bins.SetOrigin(p.Version, want); err != nil {
		return err
	}
	return nil
}

// fetchArtifacts fetches the plan's artifacts at once and returns their
// paths in the plan's order. At once, not in turn: with artifact sharing each
// artifact has its own seeder, and a seeder that first waited for the
// artifact before it (from its peers, on a loaded host) could stay silent
// past its turn, so that the next host fetched the same artifact from the
// source again (N=100: 1.5-2 copies from the source instead of one). The
// first failure cancels the other fetches.
func (a *Agent) fetchArtifacts(ctx context.Context, p *plan.Plan, dir string) ([]string, error) {
	names := map[string]string{}
	for _, art := range p.Artifacts {
		name, err := stage.TargetName(art.Source)
		if err != nil {
			return nil, fmt.Errorf("fetching artifact %s: %w", art.Source, err)
		}
		if other, ok := names[name]; ok {
			return nil, fmt.Errorf("artifacts %s and %s would both be staged as %s: give them distinct file names", other, art.Source, name)
		}
		names[name] = art.Source
	}
	g, ctx := errgroup.WithContext(ctx)
	files := make([]string, len(p.Artifacts))
	for i, art := range p.Artifacts {
		g.Go(func() error {
			f, err := a.fetchArtifact(ctx, p, art, dir)
			if err != nil {
				return fmt.Errorf("fetching artifact %s: %w", art.Source, err)
			}
			files[i] = f
			return nil
		})
	}
	if err := g.Wait(); err != nil { // the first failure, not the cancellations it caused
		return nil, err
	}
	return files, nil
}

func (a *Agent) liveBackup(ctx context.Context, planID, version, note string) (*statebackup.Manifest, error) {
	peerID, _ := cluster.LoadPeerID(a.cfg.ClusterDir)
	m, err := a.cfg.Backups.LiveExport(ctx, a.cfg.API, statebackup.Meta{
		ClusterVersion: version, PeerID: peerID, PlanID: planID, Note: note})
	if err != nil {
		return nil, fmt.Errorf("backing up the live pinset: %w", err)
	}
	if _, err := a.cfg.Backups.Verify(ctx, m.ID); err != nil {
		return nil, fmt.Errorf("verifying the live backup %s: %w", m.ID, err)
	}
	return m, nil
}

// switchOver is the standard procedure on this host: at SwitchAt, stop, take
// the offline backups, swap, migrate, start, verify. Every sub-step is
// journaled and skipped when already done, so it resumes after a crash.
func (a *Agent) switchOver(ctx context.Context, p *plan.Plan) error {
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	if j.Done(jVerify) {
		a.reportVerified(p.ID, p.Version, j)
		return nil
	}
	if !j.Done(jPrepare) { // cannot happen unless the journal was lost: do not touch the peer
		return a.fail(p.ID, plan.StepFailed, fmt.Errorf("journal has no completed preparation for plan %s", p.ID))
	}
	if !j.Begun(jStop) {
		stopped, err := a.stopAtBarrier(ctx, p, j)
		if err != nil || !stopped {
			return err
		}
	} else if !j.Done(jStop) {
		if err := a.stopPeer(ctx, p.ID); err != nil {
			return a.fail(p.ID, plan.StepFailed, err)
		}
	}
	if j, err = a.cfg.Journal.Load(p.ID); err != nil {
		return err
	}
	if err := a.offlineBackup(ctx, p, j); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	if err := a.swapAndMigrate(ctx, p, j); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	return a.startAndVerify(ctx, p)
}

// recountLate bounds the pin count before the stop of a host already past
// the switch time.
const recountLate = 200 * time.Millisecond

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stopAtBarrier waits for the plan's switch time and stops the peer, unless
// the plan left the switching phase meanwhile. It reports whether it stopped.
func (a *Agent) stopAtBarrier(ctx context.Context, p *plan.Plan, j *Entries) (bool, error) {
	if p.SwitchAt.IsZero() {
		return false, fmt.Errorf("plan %s has no switch time yet", p.ID) // decide does not switch before it is set
	}
	expected, _ := strconv.Atoi(j.Get(jPrepare, "backup_pins"))
	wait := time.Until(p.SwitchAt)
	if wait >= 0 {
		a.log.Info("switch committed: this host stops its peer at the common switch time",
			zap.String("plan", p.ID), zap.Time("at", p.SwitchAt), zap.Duration("in", wait))
	} else {
		a.log.Warn("this host learned of the switch after its time: it stops its peer late, which lengthens the restart skew",
			zap.String("plan", p.ID), zap.Time("at", p.SwitchAt), zap.Duration("late", -wait))
	}
	// Count again before the stop, so pins added since the backup are
	// expected back too; but never past the switch time (a host that counts
	// while the others stop is a host that stops late): then the backup's
	// count stands.
	cctx, cancel := context.WithDeadline(ctx, maxTime(p.SwitchAt, time.Now().Add(recountLate)))
	if n, err := a.cfg.API.PinCount(cctx); err == nil && n > expected {
		expected = n
	} else if err != nil {
		a.log.Info("pinset not recounted before the stop; the live backup's count is expected back",
			zap.String("plan", p.ID), zap.Int("pins", expected), zap.Error(err))
	}
	cancel()
	if wait := time.Until(p.SwitchAt); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
	if cur := a.cfg.Plans.Plan(p.ID); cur == nil || cur.Phase != plan.PhaseSwitching {
		a.log.Info("plan left the switch before this host stopped its peer; nothing to undo", zap.String("plan", p.ID))
		return false, nil
	}
	if err := a.cfg.Journal.Begin(p.ID, jStop, map[string]string{"expected_pins": strconv.Itoa(expected)}); err != nil {
		return false, a.fail(p.ID, plan.StepFailed, err)
	}
	a.report(p.ID, func(hp *plan.HostProgress) { hp.Step, hp.Detail = plan.StepStopping, "stopping the peer" })
	if err := a.stopPeer(ctx, p.ID); err != nil {
		return false, a.fail(p.ID, plan.StepFailed, err)
	}
	return true, nil
}

func (a *Agent) stopPeer(ctx context.Context, planID string) error {
	if err := a.stopRunner(ctx); err != nil {
		return fmt.Errorf("stopping the peer: %w", err)
	}
	a.log.Info("peer stopped", zap.String("plan", planID))
	return a.cfg.Journal.Done(planID, jStop, nil)
}

// stopRunner stops the peer through the runner, first closing this agent's
// idle connections to it so that none holds up the peer's clean shutdown
// (see cluster.Client.CloseIdleConnections).
func (a *Agent) stopRunner(ctx context.Context) error {
	a.cfg.API.CloseIdleConnections()
	return a.cfg.Runner.Stop(ctx)
}

// stateFolders are the folders of a cluster config folder that can hold the pinset.
var stateFolders = []string{"raft", "pebble", "badger", "badger3", "leveldb"}

// offlineBackup copies the stopped peer's state folders and fingerprints
// them, which is all a rollback needs. It is inside the outage, so it does
// nothing more: the offline export of that state is read from these copies
// once the plan has ended (exportStoppedState), not while the peer is down.
func (a *Agent) offlineBackup(ctx context.Context, p *plan.Plan, j *Entries) error {
	if j.Done(jBackupState) {
		return nil
	}
	if err := a.cfg.Journal.Begin(p.ID, jBackupState, nil); err != nil {
		return err
	}
	peerID, _ := cluster.LoadPeerID(a.cfg.ClusterDir)
	meta := statebackup.Meta{ClusterVersion: j.Get(jPrepare, "from"), PeerID: peerID, PlanID: p.ID}
	var present, copies []string
	for _, f := range stateFolders {
		dir := filepath.Join(a.cfg.ClusterDir, f)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		m, err := a.cfg.Backups.CopyFolder(ctx, dir, meta)
		if err != nil {
			return fmt.Errorf("copying state folder %s: %w", f, err)
		}
		present = append(present, f)
		copies = append(copies, f+"="+m.ID)
	}
	fp, err := fingerprint(a.cfg.ClusterDir)
	if err != nil {
		return err
	}
	return a.cfg.Journal.Done(p.ID, jBackupState, map[string]string{
		"folders": strings.Join(present, ","), "copies": strings.Join(copies, ","), "fingerprint": fp})
}

func (a *Agent) swapAndMigrate(ctx context.Context, p *plan.Plan, j *Entries) error {
	if !j.Done(jSwap) {
		a.report(p.ID, func(hp *plan.HostProgress) {
			hp.Step, hp.Detail = plan.StepSwapping, "switching binaries to "+p.Version
		})
		if err := a.cfg.Journal.Begin(p.ID, jSwap, nil); err != nil {
			return err
		}
		if err := a.activate(p.Version); err != nil {
			return err
		}
		if err := a.cfg.Journal.Done(p.ID, jSwap, nil); err != nil {
			return err
		}
	}
	if j.Done(jMigrate) {
		return nil
	}
	caps, err := a.stagedCapabilities(ctx, p, j)
	if err != nil {
		return err
	}
	if caps.StateUpgrade {
		a.log.Info("running the state migration of the new version", zap.String("plan", p.ID))
		if err := a.cfg.Journal.Begin(p.ID, jMigrate, nil); err != nil {
			return err
		}
		bin := cluster.Binary{Path: a.cfg.Bins.ServicePath(), Env: a.cfg.BinaryEnv}
		if err := bin.StateUpgrade(ctx, a.cfg.ClusterDir); err != nil {
			return fmt.Errorf("migrating state to %s: %w", p.Version, err)
		}
	}
	return a.cfg.Journal.Done(p.ID, jMigrate, map[string]string{"daemon_upgrade": strconv.FormatBool(caps.DaemonUpgrade)})
}

func (a *Agent) activate(version string) error {
	cur, err := a.cfg.Bins.Current()
	if err == nil && cur == version {
		return nil
	}
	if err := a.cfg.Bins.Activate(version); err != nil {
		return fmt.Errorf("switching binaries to %s: %w", version, err)
	}
	return nil
}

func (a *Agent) startAndVerify(ctx context.Context, p *plan.Plan) error {
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	var opts sidecar.StartOptions
	if j.Get(jMigrate, "daemon_upgrade") == "true" {
		opts.ExtraArgs = []string{"--upgrade"}
	}
	restarts, err := a.startPeer(ctx, p.ID, opts, j.Done(jStart))
	if err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	if !j.Done(jStart) {
		if err := a.cfg.Journal.Done(p.ID, jStart, nil); err != nil {
			return a.fail(p.ID, plan.StepFailed, err)
		}
	}
	a.report(p.ID, func(hp *plan.HostProgress) {
		hp.Step, hp.Version, hp.Detail = plan.StepStarting, p.Version, "waiting for the peer to prove itself healthy"
	})
	expected, _ := strconv.Atoi(j.Get(jStop, "expected_pins"))
	pins, err := a.verify(ctx, p.Version, expected, a.expectedPeers(p), restarts)
	if err != nil {
		return a.fail(p.ID, plan.StepFailed, fmt.Errorf("verifying %s: %w", p.Version, err))
	}
	if err := a.cfg.Journal.Done(p.ID, jVerify, map[string]string{"pins": strconv.Itoa(pins)}); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	a.log.Info("peer verified on the target version", zap.String("plan", p.ID), zap.String("version", p.Version), zap.Int("pins", pins))
	j, _ = a.cfg.Journal.Load(p.ID)
	a.reportVerified(p.ID, p.Version, j)
	if p.Proc() == plan.Rolling {
		return a.watchBatch(ctx, p, expected, restarts)
	}
	return nil
}

func (a *Agent) reportVerified(planID, version string, j *Entries) {
	pins, _ := strconv.Atoi(j.Get(jVerify, "pins"))
	a.report(planID, func(hp *plan.HostProgress) {
		hp.Step, hp.Version, hp.Pins, hp.Error, hp.Detail = plan.StepVerified, version, pins, "", "target version, full pinset, all peers seen"
	})
}

// startPeer starts the peer unless it runs, and returns the runner's restart
// count at that moment, so that verification notices the peer dying.
func (a *Agent) startPeer(ctx context.Context, planID string, opts sidecar.StartOptions, mayRun bool) (int, error) {
	st, err := a.cfg.Runner.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("asking whether the peer runs: %w", err)
	}
	if st.Running && mayRun {
		return st.Restarts, nil
	}
	if st.Running {
		if err := a.stopRunner(ctx); err != nil {
			return 0, fmt.Errorf("stopping the peer before its start: %w", err)
		}
	}
	if err := a.cfg.Runner.Start(ctx, opts); err != nil {
		return 0, fmt.Errorf("starting the peer: %w", err)
	}
	st, err = a.cfg.Runner.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("asking whether the peer runs: %w", err)
	}
	a.log.Info("peer started", zap.String("plan", planID), zap.Int("pid", st.PID))
	return st.Restarts, nil
}

// expectedPeers are the cluster peers a verified peer must see: beside every
// host of the plan; in the bootstrap procedure, the survivor and itself.
func (a *Agent) expectedPeers(p *plan.Plan) []string {
	hosts := slices.Collect(maps.Keys(p.Hosts))
	bootstrap := p.Proc() == plan.Bootstrap && p.Survivor != ""
	if bootstrap {
		hosts = []string{p.Survivor, a.cfg.HostID}
	}
	var ids []string
	a.cfg.Plans.View(func(s *plan.State) { // not State(): a copy of every plan on record
		for _, id := range hosts {
			if h, ok := s.Hosts[id]; ok && h.ClusterPeer != "" {
				ids = append(ids, h.ClusterPeer)
			}
		}
	})
	if !bootstrap {
		sort.Strings(ids)
	}
	return ids
}

// fingerprint summarises the state folders (names, sizes, times) so a rollback
// can tell whether the new version changed them.
func fingerprint(clusterDir string) (string, error) {
	var b strings.Builder
	for _, f := range stateFolders {
		root := filepath.Join(clusterDir, f)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(clusterDir, path)
			fmt.Fprintf(&b, "%s:%d:%d;", rel, fi.Size(), fi.ModTime().UnixNano())
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("fingerprinting state folder %s: %w", f, err)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:]), nil
}
