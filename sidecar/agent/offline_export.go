package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/statebackup"
)

// jExport records the offline export of the state as it was when the peer
// was stopped for the plan.
const jExport = "export-offline"

// exportStoppedState reads the state-folder copies taken while the peer was
// stopped with the version that wrote them (`state export` in a scratch
// config folder) and stores the result as an offline export: a portable copy
// of the pinset at the stop, which every release can import. It runs once
// the plan has ended, so that it adds nothing to the outage.
//
// A short export is recorded and reported, never trusted: an offline export
// of raft state reads only its last snapshot (reference item 2); the live
// backup and the folder copies stay what a restore uses. A failure is logged
// and recorded, and fails nothing: the folder copies are kept either way.
func (a *Agent) exportStoppedState(ctx context.Context, p *plan.Plan, j *Entries) {
	if !j.Done(jBackupState) || j.Done(jExport) || j.Get(jBackupState, "copies") == "" {
		return
	}
	log := a.log.With(zap.String("plan", p.ID), zap.String("step", jExport))
	if err := a.cfg.Journal.Begin(p.ID, jExport, nil); err != nil {
		log.Warn("cannot record the offline export of the stopped state", zap.Error(err))
		return
	}
	data, err := a.exportCopies(ctx, p, j)
	switch {
	case err != nil && ctx.Err() != nil:
		return // the daemon is stopping: tried again at its next start
	case err != nil:
		data = map[string]string{"note": "offline export failed: " + err.Error()}
		log.Warn("offline export of the stopped state failed; the live backup and the state-folder copies are kept", zap.Error(err))
	case data["note"] != "":
		log.Warn(data["note"])
	default:
		log.Info("offline export of the stopped state stored", zap.String("backup", data["offline"]), zap.String("pins", data["offline_pins"]))
	}
	if err := a.cfg.Journal.Done(p.ID, jExport, data); err != nil {
		log.Warn("cannot record the offline export of the stopped state", zap.Error(err))
	}
}

func (a *Agent) exportCopies(ctx context.Context, p *plan.Plan, j *Entries) (map[string]string, error) {
	from := j.Get(jPrepare, "from")
	if from == "" || !a.cfg.Bins.Has(from) {
		return nil, fmt.Errorf("version %q, which wrote the state, is no longer installed", from)
	}
	scratch := filepath.Join(a.stagingDir(p.ID), "offline-read")
	defer os.RemoveAll(scratch)
	if err := cluster.ScratchConfig(a.cfg.ClusterDir, scratch); err != nil {
		return nil, err
	}
	for _, kv := range splitList(j.Get(jBackupState, "copies")) {
		folder, id, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("journal lists a state copy as %q", kv)
		}
		if err := a.cfg.Backups.RestoreFolder(ctx, id, filepath.Join(scratch, folder)); err != nil {
			return nil, fmt.Errorf("unpacking the copy of %s: %w", folder, err)
		}
	}
	exp := filepath.Join(a.stagingDir(p.ID), "offline-export.ndjson")
	defer os.Remove(exp)
	bin := cluster.Binary{Path: a.cfg.Bins.ServicePathFor(from), Env: a.cfg.BinaryEnv}
	if err := bin.StateExport(ctx, scratch, exp); err != nil {
		return nil, err
	}
	peerID, _ := cluster.LoadPeerID(a.cfg.ClusterDir)
	m, err := a.cfg.Backups.AddExport(ctx, exp, statebackup.KindOfflineExport,
		statebackup.Meta{ClusterVersion: from, PeerID: peerID, PlanID: p.ID})
	if err != nil {
		return nil, fmt.Errorf("storing the offline export: %w", err)
	}
	data := map[string]string{"offline": m.ID, "offline_pins": strconv.Itoa(m.Pins)}
	if expected, _ := strconv.Atoi(j.Get(jStop, "expected_pins")); m.Pins < expected {
		data["note"] = fmt.Sprintf("offline export holds %d of %d pins: not trusted (live backup and state-folder copy kept)", m.Pins, expected)
	}
	return data, nil
}
