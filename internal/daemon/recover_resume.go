package daemon

// The orchestrating daemon's record of a recovery, and its resumption. The record is written before the first step
// and after each one; a daemon killed mid-way finds it at start and carries on from the first step not known done.
// Every step is safe to repeat (recover_host.go: a rebuild begun with a backup goes on with that backup, not with a
// live pinset that its own stop emptied), so the step the daemon died in is simply run again. A recovery that
// another daemon ran since (a newer recovery journaled on any host) supersedes the record: it is not resumed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/internal/atomicfile"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/sidecar/agent"
)

const (
	// resumeWait bounds how long a restarted daemon waits for the daemons' raft group before resuming.
	resumeWait = 2 * time.Minute
	// resumeAttempts is how many times a resumed recovery is tried (other daemons may still be restarting).
	resumeAttempts = 3
	resumePause    = 3 * time.Second
)

// recoveryRecord is where a recovery carried out by this daemon stands.
type recoveryRecord struct {
	Report   *control.RecoverReport `json:"report"`
	Next     int                    `json:"next"`     // the first step not known done
	Addr     string                 `json:"addr"`     // the rebuilt peer's address, once known
	Expected int                    `json:"expected"` // the pins every peer must reach
	Ended    string                 `json:"ended,omitempty"`
}

// errRecoveryRunning refuses a second recovery while one runs or is being resumed on this daemon.
var errRecoveryRunning = errors.New("a recovery is already running on this daemon")

func (d *Daemon) recoveriesDir() string { return filepath.Join(d.cfg.Dir, "recoveries") }

func (d *Daemon) saveRecovery(rec *recoveryRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the record of recovery %s: %w", rec.Report.ID, err)
	}
	if err := os.MkdirAll(d.recoveriesDir(), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", d.recoveriesDir(), err)
	}
	path := filepath.Join(d.recoveriesDir(), rec.Report.ID+".json")
	if err := atomicfile.Write(path, b); err != nil {
		return fmt.Errorf("recording where recovery %s stands: %w", rec.Report.ID, err)
	}
	return nil
}

// unfinishedRecovery is the newest recovery this daemon recorded and did not end, or nil.
func (d *Daemon) unfinishedRecovery() (*recoveryRecord, error) {
	ents, err := os.ReadDir(d.recoveriesDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing recorded recoveries: %w", err)
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "recover-") && strings.HasSuffix(n, ".json") {
			names = append(names, n)
		}
	}
	sort.Strings(names) // IDs are times: the newest last
	if len(names) == 0 {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(d.recoveriesDir(), names[len(names)-1]))
	if err != nil {
		return nil, fmt.Errorf("reading the record of a recovery: %w", err)
	}
	var rec recoveryRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Report == nil || rec.Report.Plan == nil {
		return nil, fmt.Errorf("the record %s is damaged: %v", names[len(names)-1], err)
	}
	if rec.Ended != "" {
		return nil, nil
	}
	return &rec, nil
}

// resumeRecovery carries on, at start, a recovery this daemon was carrying out when it stopped. It runs in its own
// goroutine; a recovery asked for meanwhile is refused until it ends.
func (d *Daemon) resumeRecovery(ctx context.Context) {
	rec, err := d.unfinishedRecovery()
	if err != nil {
		d.log.Error("reading where an interrupted recovery stood; it is not resumed, run recover again", zap.Error(err))
		return
	}
	if rec == nil {
		return
	}
	if !d.recoverMu.TryLock() {
		return
	}
	defer d.recoverMu.Unlock()
	id := rec.Report.ID
	log := d.log.With(zap.String("recovery", id))
	log.Warn("this daemon stopped in the middle of a recovery; resuming it", zap.Int("next_step", rec.Next+1),
		zap.Int("steps", len(rec.Report.Plan.Steps)))
	if err := d.waitGroupReady(ctx); err != nil {
		log.Error("the interrupted recovery is not resumed; run recover again", zap.Error(err))
		return
	}
	for attempt := 1; attempt <= resumeAttempts; attempt++ {
		if by := d.supersededBy(ctx, id); by != "" {
			rec.Ended = "superseded by " + by
			_ = d.saveRecovery(rec)
			log.Warn("the interrupted recovery is not resumed: a newer one ran since", zap.String("newer", by))
			return
		}
		err = d.carryOut(ctx, rec)
		if err == nil || ctx.Err() != nil {
			break
		}
		log.Warn("resuming the recovery failed; trying again", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(resumePause):
		}
	}
	if err != nil {
		log.Error("the resumed recovery failed; run recover again", zap.Error(err))
		return
	}
	log.Info("resumed recovery done: every peer verified")
}

// waitGroupReady waits until the daemons' raft group has a leader and this daemon knows the registered hosts.
func (d *Daemon) waitGroupReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, resumeWait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := d.raft.Leader(); ok && len(d.fsm.State().Hosts) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the daemons' raft group had no leader within %s", resumeWait)
		case <-tick.C:
		}
	}
}

// supersededBy names a recovery newer than id journaled on any reachable host, or "".
func (d *Daemon) supersededBy(ctx context.Context, id string) string {
	newest := ""
	for _, inv := range d.inventories(ctx) {
		if inv.LastRecovery > id && inv.LastRecovery > newest {
			newest = inv.LastRecovery
		}
	}
	return newest
}

// lastRecovery is the newest recovery journaled on this host, or "".
func (d *Daemon) lastRecovery() string {
	j, err := d.recoveryJournal()
	if err != nil {
		return ""
	}
	ids, err := j.Plans()
	if err != nil {
		return ""
	}
	return newestRecovery(ids)
}

func newestRecovery(ids []string) string {
	newest := ""
	for _, id := range ids {
		if strings.HasPrefix(id, "recover-") && id > newest {
			newest = id
		}
	}
	return newest
}

// holdPeer keeps the peer stopped at daemon start while a recovery holds it (recoveryHolds).
func (d *Daemon) holdPeer(j *agent.Journal) func() (string, bool) {
	return func() (string, bool) {
		id, hold := recoveryHolds(j)
		return "recovery " + id + " stopped it and has not started it again; it is resumed, or run recover again", hold
	}
}

// recoveryHolds reports whether the newest recovery journaled here left this host's peer stopped on purpose: it
// was cleaned and has not joined yet, or its rebuild was begun and not finished. Such a peer is not started at
// daemon start; the recovery (resumed, or run again) starts it.
func recoveryHolds(j *agent.Journal) (string, bool) {
	ids, err := j.Plans()
	if err != nil {
		return "", false
	}
	id := newestRecovery(ids)
	if id == "" {
		return "", false
	}
	e, err := j.Load(id)
	if err != nil {
		return "", false
	}
	cleaned := e.Begun(jRecoverClean) && !e.Done(jRecoverJoin)
	rebuilding := e.Begun(jRecoverRebuild) && !e.Done(jRecoverRebuild)
	return id, cleaned || rebuilding
}
