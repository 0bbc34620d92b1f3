package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/statebackup"
)

// remove takes this host's peer out of the cluster for the bootstrap
// procedure: a fresh verified live backup, peers rm, stop (a removed raft
// peer keeps running on real releases), a copy of the state folders, and
// `state cleanup -f` (which keeps raft/ as raft.old.N). Where the old state
// went is journaled and reported.
func (a *Agent) remove(ctx context.Context, p *plan.Plan) error {
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	if j.Done(jRemove) {
		a.reportRemoved(p.ID, j)
		return nil
	}
	from := j.Get(jPrepare, "from")
	resuming := j.Begun(jRemove)
	if !resuming {
		m, err := a.liveBackup(ctx, p.ID, from, "before removal")
		if err != nil {
			return a.fail(p.ID, plan.StepFailed, err)
		}
		expected := max(m.Pins, atoi(j.Get(jPrepare, "backup_pins")))
		if err := a.cfg.Journal.Begin(p.ID, jRemove, map[string]string{"backup": m.ID, "expected_pins": strconv.Itoa(expected)}); err != nil {
			return a.fail(p.ID, plan.StepFailed, err)
		}
	}
	log := a.log.With(zap.String("plan", p.ID), zap.String("step", jRemove))
	a.report(p.ID, func(hp *plan.HostProgress) { hp.Step, hp.Detail = plan.StepRemoving, "leaving the cluster (peers rm)" })
	if err := a.leave(ctx, log, resuming); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	if err := a.stopRunner(ctx); err != nil {
		return a.fail(p.ID, plan.StepFailed, fmt.Errorf("stopping the removed peer: %w", err))
	}
	data, err := a.keepAndClean(ctx, p.ID, from)
	if err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	if err := a.cfg.Journal.Done(p.ID, jRemove, data); err != nil {
		return a.fail(p.ID, plan.StepFailed, err)
	}
	log.Info("peer removed from the cluster and cleaned; its old state is kept", zap.String("kept", data["kept"]), zap.String("copies", data["copies"]))
	j, _ = a.cfg.Journal.Load(p.ID)
	a.reportRemoved(p.ID, j)
	return nil
}

// leave asks the cluster to remove this peer. crdt clusters cannot remove
// peers (their peers leave by being stopped); a resumed removal may find the
// peer already gone.
func (a *Agent) leave(ctx context.Context, log *zap.Logger, resuming bool) error {
	peerID, err := cluster.LoadPeerID(a.cfg.ClusterDir)
	if err != nil {
		return fmt.Errorf("reading the peer's identity: %w", err)
	}
	err = a.cfg.API.RemovePeer(ctx, peerID)
	var apiErr *cluster.APIError
	switch {
	case err == nil:
		log.Info("cluster peer removed from the membership (peers rm)")
	case errors.As(err, &apiErr):
		log.Warn("the cluster did not remove the peer; it leaves by being stopped and cleaned", zap.String("answer", apiErr.Message))
	case resuming && cluster.IsUnreachable(err):
		log.Info("peer already stopped by the interrupted removal")
	default:
		return fmt.Errorf("removing the peer from the cluster: %w", err)
	}
	return nil
}

// keepAndClean copies the state folders, then runs `state cleanup -f` with the
// running version's binary, recording the raft.old.N it left.
func (a *Agent) keepAndClean(ctx context.Context, planID, from string) (map[string]string, error) {
	peerID, _ := cluster.LoadPeerID(a.cfg.ClusterDir)
	meta := statebackup.Meta{ClusterVersion: from, PeerID: peerID, PlanID: planID, Note: "removed peer's state"}
	var copies []string
	for _, f := range stateFolders {
		dir := filepath.Join(a.cfg.ClusterDir, f)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		m, err := a.cfg.Backups.CopyFolder(ctx, dir, meta)
		if err != nil {
			return nil, fmt.Errorf("copying state folder %s: %w", f, err)
		}
		copies = append(copies, f+"="+m.ID)
	}
	before := oldFolders(a.cfg.ClusterDir)
	if len(copies) > 0 {
		bin := cluster.Binary{Path: a.cfg.Bins.ServicePathFor(from), Env: a.cfg.BinaryEnv}
		if err := bin.StateCleanup(ctx, a.cfg.ClusterDir); err != nil {
			return nil, fmt.Errorf("cleaning the removed peer's state: %w", err)
		}
	}
	var kept []string
	for f := range oldFolders(a.cfg.ClusterDir) {
		if !before[f] {
			kept = append(kept, filepath.Join(a.cfg.ClusterDir, f))
		}
	}
	return map[string]string{"copies": strings.Join(copies, ","), "kept": strings.Join(kept, ",")}, nil
}

func oldFolders(dir string) map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "raft.old.") {
			out[e.Name()] = true
		}
	}
	return out
}

func (a *Agent) reportRemoved(planID string, j *Entries) {
	where := j.Get(jRemove, "kept")
	if where == "" {
		where = "backups " + j.Get(jRemove, "copies")
	}
	a.report(planID, func(hp *plan.HostProgress) {
		hp.Step, hp.Detail = plan.StepRemoved, "out of the cluster; old state kept in "+where+" and live backup "+j.Get(jRemove, "backup")
	})
}

// rejoin starts this removed host on the target version with --bootstrap to
// the survivor and verifies it (joined, target version, full pinset). It is
// tried twice; then the host is left out, stopped, and reported.
func (a *Agent) rejoin(ctx context.Context, p *plan.Plan) error {
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		return err
	}
	if j.Done(jRejoin) {
		a.reportVerified(p.ID, p.Version, j)
		return nil
	}
	if !j.Begun(jRejoin) {
		if err := a.cfg.Journal.Begin(p.ID, jRejoin, nil); err != nil {
			return a.fail(p.ID, plan.StepFailed, err)
		}
	}
	addr, err := a.survivorAddr(p)
	if err != nil {
		return a.leftOut(ctx, p.ID, err)
	}
	a.report(p.ID, func(hp *plan.HostProgress) {
		hp.Step, hp.Detail = plan.StepRejoining, "joining the survivor on "+p.Version
	})
	if err := a.activate(p.Version); err != nil {
		return a.leftOut(ctx, p.ID, err)
	}
	expected := a.rejoinExpected(p, j)
	var last error
	for attempt := 1; attempt <= 2; attempt++ {
		pins, err := a.joinOnce(ctx, p, addr, p.Version, expected, attempt)
		if err == nil {
			if err := a.cfg.Journal.Done(p.ID, jRejoin, map[string]string{"pins": strconv.Itoa(pins)}); err != nil {
				return a.fail(p.ID, plan.StepFailed, err)
			}
			a.log.Info("peer rejoined the cluster on the target version", zap.String("plan", p.ID), zap.Int("pins", pins), zap.Int("attempt", attempt))
			j, _ = a.cfg.Journal.Load(p.ID)
			a.reportVerified(p.ID, p.Version, j)
			return nil
		}
		last = err
		a.log.Warn("rejoin attempt failed", zap.String("plan", p.ID), zap.Int("attempt", attempt), zap.Error(err))
	}
	return a.leftOut(ctx, p.ID, last)
}

// joinOnce (re)starts the peer with --bootstrap addr and verifies it.
func (a *Agent) joinOnce(ctx context.Context, p *plan.Plan, addr, version string, expected, attempt int) (int, error) {
	if st, err := a.cfg.Runner.Status(ctx); err == nil && st.Running {
		if err := a.stopRunner(ctx); err != nil {
			return 0, fmt.Errorf("stopping the peer before it joins: %w", err)
		}
	}
	if attempt > 1 { // what the failed attempt wrote is kept aside, like the first cleanup
		if _, err := a.keepAndClean(ctx, p.ID, version); err != nil {
			return 0, err
		}
	}
	restarts, err := a.startPeer(ctx, p.ID, sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", addr}}, false)
	if err != nil {
		return 0, err
	}
	return a.verify(ctx, version, expected, a.expectedPeers(p), restarts)
}

func (a *Agent) leftOut(ctx context.Context, planID string, cause error) error {
	if err := a.stopRunner(ctx); err != nil {
		a.log.Warn("stopping the peer that could not rejoin", zap.String("plan", planID), zap.Error(err))
	}
	a.report(planID, func(hp *plan.HostProgress) {
		hp.Step, hp.Error, hp.Detail = plan.StepLeftOut, cause.Error(), "left out of the cluster: could not rejoin (its peer is stopped)"
	})
	return cause
}

// rejoinExpected is the pin count a rejoined peer must reach: the most of its
// own backups and of what the verified survivor holds.
func (a *Agent) rejoinExpected(p *plan.Plan, j *Entries) int {
	n := max(atoi(j.Get(jPrepare, "backup_pins")), atoi(j.Get(jRemove, "expected_pins")))
	if cur := a.cfg.Plans.Plan(p.ID); cur != nil {
		if s, ok := cur.Hosts[cur.Survivor]; ok && s.Step == plan.StepVerified {
			n = max(n, s.Pins)
		}
	}
	return n
}

// survivorAddr is a multiaddr of the survivor's cluster peer, for --bootstrap.
func (a *Agent) survivorAddr(p *plan.Plan) (string, error) {
	var addrs []string
	ok := false
	a.cfg.Plans.View(func(s *plan.State) {
		if h, found := s.Hosts[p.Survivor]; found {
			addrs, ok = slices.Clone(h.ClusterAddrs), true
		}
	})
	if !ok {
		return "", fmt.Errorf("the survivor %s is not registered", plan.ShortID(p.Survivor))
	}
	for _, ad := range addrs {
		if strings.Contains(ad, "/p2p/") && !strings.Contains(ad, "/0.0.0.0/") {
			return ad, nil
		}
	}
	return "", fmt.Errorf("the survivor %s has no cluster peer address to bootstrap to", plan.ShortID(p.Survivor))
}

// rejoinOld is the rollback of a removed host: back on its old version and
// bootstrapped to the restored survivor.
func (a *Agent) rejoinOld(ctx context.Context, p *plan.Plan, j *Entries, from string) (int, error) {
	addr, err := a.survivorAddr(p)
	if err != nil {
		return 0, err
	}
	if err := a.activate(from); err != nil {
		return 0, err
	}
	expected := max(atoi(j.Get(jPrepare, "backup_pins")), atoi(j.Get(jRemove, "expected_pins")))
	return a.joinOnce(ctx, p, addr, from, expected, 1)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
