package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar"
)

// rollback returns this host to the version and state it had before the plan.
// A host that never stopped its peer has nothing to undo.
func (a *Agent) rollback(ctx context.Context, p *plan.Plan) error {
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	from := j.Get(jPrepare, "from")
	if j.Done(jRollback) {
		a.reportRolledBack(p.ID, from, j)
		return nil
	}
	log := a.log.With(zap.String("plan", p.ID), zap.String("step", jRollback))
	if !j.Begun(jStop) && !j.Begun(jRemove) {
		log.Info("rolling back: this host never stopped its peer, nothing to undo")
		if err := a.ensureRunning(ctx); err != nil {
			return a.fail(p.ID, plan.StepRollbackErr, err)
		}
		if err := a.cfg.Journal.Done(p.ID, jRollback, map[string]string{"note": "nothing to undo"}); err != nil {
			return a.fail(p.ID, plan.StepRollbackErr, err)
		}
		j, _ = a.cfg.Journal.Load(p.ID)
		a.reportRolledBack(p.ID, from, j)
		return nil
	}
	if from == "" {
		return a.fail(p.ID, plan.StepRollbackErr, fmt.Errorf("journal does not say which version ran before plan %s", p.ID))
	}
	window := j.Get(jRollback, "window")
	if !j.Begun(jRollback) {
		window = a.windowBackup(ctx, p)
	}
	if err := a.cfg.Journal.Begin(p.ID, jRollback, map[string]string{"window": window}); err != nil {
		return a.fail(p.ID, plan.StepRollbackErr, err)
	}
	log.Warn("rolling back this host to its previous version", zap.String("to", from), zap.String("reason", p.Reason))
	a.report(p.ID, func(hp *plan.HostProgress) {
		hp.Step, hp.Detail = plan.StepRollingBack, "returning to "+from
	})
	if p.Proc() == plan.Bootstrap && p.Tasks[a.cfg.HostID] == plan.TaskRejoinOld {
		pins, err := a.rejoinOld(ctx, p, j, from)
		if err != nil {
			return a.fail(p.ID, plan.StepRollbackErr, fmt.Errorf("rejoining the survivor on %s: %w", from, err))
		}
		return a.rolledBack(p.ID, from, pins)
	}
	if err := a.stopRunner(ctx); err != nil {
		return a.fail(p.ID, plan.StepRollbackErr, fmt.Errorf("stopping the peer: %w", err))
	}
	if err := a.activate(from); err != nil {
		return a.fail(p.ID, plan.StepRollbackErr, err)
	}
	if err := a.restoreStateIfChanged(ctx, p.ID, j); err != nil {
		return a.fail(p.ID, plan.StepRollbackErr, err)
	}
	restarts, err := a.startPeer(ctx, p.ID, sidecar.StartOptions{}, false)
	if err != nil {
		return a.fail(p.ID, plan.StepRollbackErr, err)
	}
	expected, _ := strconv.Atoi(j.Get(jStop, "expected_pins"))
	// The old version gets until the rollback's deadline to prove itself, not
	// just one verify timeout: a slow start must not leave a split cluster.
	limit := max(a.cfg.VerifyTimeout, time.Until(p.Deadline)-2*time.Second)
	pins, err := a.verifyWithin(ctx, limit, from, expected, a.expectedPeers(p), restarts)
	if err != nil {
		return a.fail(p.ID, plan.StepRollbackErr, fmt.Errorf("verifying %s after rollback: %w", from, err))
	}
	if window != "" {
		n, err := a.repinWindow(ctx, p.ID, window)
		if err != nil {
			return a.fail(p.ID, plan.StepRollbackErr, fmt.Errorf("pinning again what was pinned on %s before the rollback: %w", p.Version, err))
		}
		pins += n
	}
	return a.rolledBack(p.ID, from, pins)
}

func (a *Agent) rolledBack(planID, from string, pins int) error {
	if err := a.cfg.Journal.Done(planID, jRollback, map[string]string{"pins": strconv.Itoa(pins)}); err != nil {
		return a.fail(planID, plan.StepRollbackErr, err)
	}
	a.log.Info("rolled back and verified", zap.String("plan", planID), zap.String("version", from), zap.Int("pins", pins))
	j, _ := a.cfg.Journal.Load(planID)
	a.reportRolledBack(planID, from, j)
	return nil
}

func (a *Agent) reportRolledBack(planID, from string, j *Entries) {
	pins, err := strconv.Atoi(j.Get(jRollback, "pins"))
	a.report(planID, func(hp *plan.HostProgress) {
		hp.Step, hp.Version, hp.Detail = plan.StepRolledBack, from, "back on "+from
		if err == nil {
			hp.Pins = pins
		}
	})
}

// restoreStateIfChanged puts the state folders back as they were when the peer
// was stopped, if anything ran on them since. Folders that appeared since (a
// migration's output) are moved aside, never deleted.
func (a *Agent) restoreStateIfChanged(ctx context.Context, planID string, j *Entries) error {
	if !j.Done(jBackupState) {
		// The swap comes after the offline backups: without them no new binary ran.
		return nil
	}
	now, err := fingerprint(a.cfg.ClusterDir)
	if err != nil {
		return err
	}
	if now == j.Get(jBackupState, "fingerprint") {
		a.log.Info("state folders unchanged since the stop: no restore needed", zap.String("plan", planID))
		return nil
	}
	had := map[string]bool{}
	for _, f := range splitList(j.Get(jBackupState, "folders")) {
		had[f] = true
	}
	stamp := time.Now().UTC().Format("20060102T150405")
	for _, f := range stateFolders {
		dir := filepath.Join(a.cfg.ClusterDir, f)
		if _, err := os.Stat(dir); err != nil || had[f] {
			continue
		}
		aside := dir + ".rolled-back-" + stamp
		if err := os.Rename(dir, aside); err != nil {
			return fmt.Errorf("moving aside state folder %s written by the new version: %w", f, err)
		}
		a.log.Info("moved aside a state folder the new version wrote", zap.String("plan", planID), zap.String("folder", aside))
	}
	for _, kv := range splitList(j.Get(jBackupState, "copies")) {
		folder, id, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if err := a.cfg.Backups.RestoreFolder(ctx, id, filepath.Join(a.cfg.ClusterDir, folder)); err != nil {
			return fmt.Errorf("restoring state folder %s from backup %s: %w", folder, id, err)
		}
		a.log.Info("state folder restored from the copy taken at the stop", zap.String("plan", planID), zap.String("folder", folder), zap.String("backup", id))
	}
	return nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// verify waits until the peer runs version, holds at least expectedPins pins
// and sees every expected peer, or fails: when the peer exits, or at the
// verification deadline with what was still missing. It returns the pin count.
func (a *Agent) verify(ctx context.Context, version string, expectedPins int, peers []string, restarts int) (int, error) {
	return a.verifyWithin(ctx, a.cfg.VerifyTimeout, version, expectedPins, peers, restarts)
}

// verifyWithin is verify with its own time limit.
func (a *Agent) verifyWithin(ctx context.Context, limit time.Duration, version string, expectedPins int, peers []string, restarts int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(a.cfg.PollInterval)
	defer tick.Stop()
	missing := "nothing checked yet"
	counted := -1
	start, told := time.Now(), time.Now()
	for {
		pins, why, err := a.check(ctx, version, expectedPins, peers, restarts, counted)
		if err != nil {
			return 0, err
		}
		if why == "" {
			return pins, nil
		}
		if why != missing {
			a.log.Debug("peer not healthy yet", zap.String("why", why), zap.Duration("after", time.Since(start)))
		}
		if time.Since(told) >= waitingLogEvery {
			told = time.Now()
			a.log.Info("still waiting for the peer to be healthy", zap.String("why", why),
				zap.Duration("after", time.Since(start).Round(time.Millisecond)), zap.Duration("limit", limit))
		}
		if pins >= expectedPins {
			// The full pinset is there; while the peer list catches up (seconds
			// of crdt membership lag) it is not read again at every poll. On a
			// real cluster that is the whole pinset, 5 times a second. The
			// peer's restart check still runs at every poll.
			counted = pins
		}
		missing = why
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("not healthy within %s: %s", limit.Round(time.Second), missing)
		case <-tick.C:
		}
	}
}

// waitingLogEvery is how often a verification that keeps waiting says why.
const waitingLogEvery = 5 * time.Second

// healthy checks once. It returns why the peer is not yet healthy ("" if it
// is), or an error when waiting longer cannot help.
func (a *Agent) healthy(ctx context.Context, version string, expectedPins int, peers []string, restarts int) (int, string, error) {
	return a.check(ctx, version, expectedPins, peers, restarts, -1)
}

// check is healthy, taking counted (when not negative) as the pin count
// instead of counting the pinset again.
func (a *Agent) check(ctx context.Context, version string, expectedPins int, peers []string, restarts, counted int) (int, string, error) {
	st, err := a.cfg.Runner.Status(ctx)
	if err == nil && (st.Restarts > restarts || !st.Running) {
		return 0, "", fmt.Errorf("the peer exited after its start (%s)", orUnknown(st.LastExit))
	}
	id, err := a.cfg.API.Health(ctx)
	if err != nil {
		return 0, "REST API not answering: " + err.Error(), nil
	}
	if plan.CompareVersions(id.Version, version) != 0 {
		return 0, fmt.Sprintf("peer runs %s, not %s", id.Version, version), nil
	}
	pins := counted
	if pins < 0 {
		if pins, err = a.cfg.API.PinCount(ctx); err != nil {
			return 0, "pinset not readable: " + err.Error(), nil
		}
	}
	if pins < expectedPins {
		return pins, fmt.Sprintf("pinset holds %d of %d pins", pins, expectedPins), nil
	}
	// The peer takes /id's cluster_peers and /peers from the same list of its
	// consensus; /peers adds an RPC to every peer and an answer of ~N² bytes
	// (370 kB at 50 peers). So /peers, the proof, is read only once /id
	// lists every peer: while membership catches up, a poll costs a few kB.
	if len(id.ClusterPeers) > 0 { // a release whose /id has none: /peers alone
		if lacking := notSeen(peers, id.ID, id.ClusterPeers); len(lacking) > 0 {
			return pins, describeNotSeen(lacking, len(peers)), nil
		}
	}
	seen, err := a.cfg.API.PeerIDs(ctx)
	if err != nil {
		return pins, "peer list not readable: " + err.Error(), nil
	}
	if lacking := notSeen(peers, id.ID, seen); len(lacking) > 0 {
		return pins, describeNotSeen(lacking, len(peers)), nil
	}
	return pins, "", nil
}

// describeNotSeen names the peers not seen, the first few of them only: at
// 100 peers the whole list made every waiting log line 1 kB long.
func describeNotSeen(lacking []string, of int) string {
	const show = 5
	if len(lacking) <= show {
		return "cluster peers not seen: " + strings.Join(lacking, ", ")
	}
	return fmt.Sprintf("cluster peers not seen: %d of %d (%s, ...)", len(lacking), of, strings.Join(lacking[:show], ", "))
}

// notSeen lists, shortened, the peers of want that are neither self nor in seen.
func notSeen(want []string, self string, seen []string) []string {
	have := make(map[string]bool, len(seen)+1)
	have[self] = true
	for _, s := range seen {
		have[s] = true
	}
	var lacking []string
	for _, p := range want {
		if !have[p] {
			lacking = append(lacking, plan.ShortID(p))
		}
	}
	return lacking
}

func orUnknown(s string) string {
	if s == "" {
		return "no exit status"
	}
	return s
}
