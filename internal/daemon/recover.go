package daemon

// `upgraded recover`: the daemon where it is invoked asks every daemon of the cluster what state its host holds,
// chooses the best copy (statebackup.Choose), and drives the hosts through the recovery's steps over the
// recovery protocol. This file is the orchestration; recover_host.go is what each host does when asked.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/coordination/recoverynet"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/statebackup"
)

const (
	// inventoryTimeout bounds how long one daemon has to say what its host holds.
	inventoryTimeout = 30 * time.Second
	// stepTimeout bounds one step on one host (a stop, copies of the state folders, an import, a start).
	stepTimeout = 15 * time.Minute
)

// Operations of the recovery protocol.
const (
	opInventory = "inventory"
	opClean     = string(statebackup.ActClean)
	opRebuild   = string(statebackup.ActRebuild)
	opJoin      = string(statebackup.ActJoin)
	opVerify    = string(statebackup.ActVerify)
)

// errStaleChoice is returned when the copy chosen now is not the one the operator confirmed.
var errStaleChoice = errors.New("the state of the hosts changed since the plan was shown")

// serveRecovery answers the other daemons' recovery requests. Only daemons registered in the cluster's plan
// state may ask: the private swarm keeps out whoever lacks the cluster secret, this keeps out a stray daemon.
func (d *Daemon) serveRecovery() error {
	srv, err := recoverynet.Serve(recoverynet.Config{Host: d.node.Host, Allow: d.isClusterDaemon, Handle: d.handleRecovery,
		Timeout: stepTimeout, Log: d.log.Named("recover")})
	if err != nil {
		return fmt.Errorf("serving the recovery protocol: %w", err)
	}
	d.recovery = srv
	return nil
}

func (d *Daemon) stopRecovery() {
	if d.recovery != nil {
		d.recovery.Close()
	}
}

// isClusterDaemon: a registered host, or a member of the daemons' raft group (a daemon that just restarted knows
// the members from its own raft log before it has caught up with the registrations).
func (d *Daemon) isClusterDaemon(p peer.ID) bool {
	if _, ok := d.fsm.State().Hosts[p.String()]; ok {
		return true
	}
	ms, err := d.raft.Members()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m == p {
			return true
		}
	}
	return false
}

// handleRecovery carries out one request, from another daemon or from this one's orchestration.
func (d *Daemon) handleRecovery(ctx context.Context, from peer.ID, op string, args json.RawMessage) (any, error) {
	if op != opInventory {
		d.log.Info("recovery step asked", zap.String("op", op), zap.Stringer("by", from))
	}
	if op != opInventory && op != opVerify {
		var a stepArgs
		_ = json.Unmarshal(args, &a)
		d.recoverBusy.Store(op + " of " + a.Recovery)
		defer d.recoverBusy.Store("")
	}
	switch op {
	case opInventory:
		return d.inventory(ctx), nil
	case opClean:
		var a stepArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return d.recoverClean(ctx, a)
	case opRebuild:
		var a stepArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return d.recoverRebuild(ctx, a)
	case opJoin:
		var a stepArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return d.recoverJoin(ctx, a)
	case opVerify:
		var a stepArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		pins, err := d.waitPins(ctx, a.Pins)
		return stepAnswer{Pins: pins, Detail: fmt.Sprintf("the peer answers with %d pins", pins)}, err
	}
	return nil, fmt.Errorf("unknown recovery request %q", op)
}

// stepArgs are the arguments of every recovery step.
type stepArgs struct {
	Recovery string             `json:"recovery"` // the recovery's ID, the journal's name
	Source   statebackup.Source `json:"source,omitzero"`
	Addr     string             `json:"addr,omitempty"` // the rebuilt peer, for join
	Pins     int                `json:"pins"`           // for verify
}

// stepAnswer is what a host says it did.
type stepAnswer struct {
	Detail string `json:"detail"`
	Pins   int    `json:"pins"`
	Addr   string `json:"addr,omitempty"` // the rebuilt peer's cluster address
}

// call runs op on host: directly when it is this daemon, over the recovery protocol otherwise.
func (d *Daemon) call(ctx context.Context, host, op string, args, out any) error {
	if host == d.node.ID().String() {
		raw, err := json.Marshal(args)
		if err != nil {
			return err
		}
		res, err := d.handleRecovery(ctx, d.node.ID(), op, raw)
		if err != nil {
			return err
		}
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, out)
	}
	id, err := peer.Decode(host)
	if err != nil {
		return fmt.Errorf("host %q is not a peer ID: %w", host, err)
	}
	d.learnAddrs(id)
	return recoverynet.Call(ctx, d.node.Host, id, op, args, out)
}

// learnAddrs gives libp2p the addresses the host registered, in case the swarm lost them.
func (d *Daemon) learnAddrs(id peer.ID) {
	var ai peer.AddrInfo
	d.fsm.View(func(s *plan.State) {
		if h, ok := s.Hosts[id.String()]; ok {
			ai = hostAddrInfo(id, h)
		}
	})
	d.node.Host.Peerstore().AddAddrs(id, ai.Addrs, time.Hour)
}

// hostIDs is this daemon, then every daemon registered in the plan state or member of the raft group, sorted.
func (d *Daemon) hostIDs() []string {
	self := d.node.ID().String()
	set := map[string]bool{}
	for id := range d.fsm.State().Hosts {
		set[id] = true
	}
	if ms, err := d.raft.Members(); err == nil {
		for _, m := range ms {
			set[m.String()] = true
		}
	}
	delete(set, self)
	ids := make([]string, 0, len(set)+1)
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return append([]string{self}, ids...)
}

// inventories asks every daemon, in parallel, what its host holds. A daemon that does not answer is recorded as
// unreachable, not as a failure of the recovery.
func (d *Daemon) inventories(ctx context.Context) []statebackup.HostInventory {
	ids := d.hostIDs()
	out := make([]statebackup.HostInventory, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, inventoryTimeout)
			defer cancel()
			if err := d.call(cctx, id, opInventory, struct{}{}, &out[i]); err != nil {
				out[i] = statebackup.HostInventory{Host: id, Error: err.Error(), LivePins: -1}
			}
			if h, ok := d.fsm.State().Hosts[id]; ok && out[i].Name == "" {
				out[i].Name = h.Name
			}
		}()
	}
	wg.Wait()
	return out
}

// Recover implements control.RecoverBackend.
func (d *Daemon) Recover(ctx context.Context, req control.RecoverRequest) (*control.RecoverReport, error) {
	if p := d.runningPlan(); p != "" {
		return nil, fmt.Errorf("plan %s is running; recover after it ends", p)
	}
	if !d.recoverMu.TryLock() {
		return nil, errRecoveryRunning
	}
	defer d.recoverMu.Unlock()
	rep := &control.RecoverReport{Inventories: d.inventories(ctx), DryRun: req.DryRun}
	if err := busyHosts(rep.Inventories); err != nil {
		return rep, err
	}
	choice, err := d.choose(req, rep.Inventories)
	rep.Choice = &choice
	if err != nil {
		return rep, err
	}
	rep.Plan, err = statebackup.PlanRecovery(rep.Inventories, choice)
	if err != nil {
		return rep, err
	}
	if req.Expect != nil && !sameSource(*req.Expect, choice.Source) {
		return rep, fmt.Errorf("%w: the best copy is now %s, not the confirmed %s; nothing was changed, run recover again",
			errStaleChoice, choice.Source, *req.Expect)
	}
	if req.DryRun {
		return rep, nil
	}
	// From here the recovery runs to its end even if the operator's command goes away: a host half way through
	// must not be left stopped. Its record lets this daemon resume it if it dies first (recover_resume.go).
	rep.ID = "recover-" + time.Now().UTC().Format("20060102T150405.000Z")
	d.log.Info("recovery starting", zap.String("recovery", rep.ID), zap.String("source", choice.Source.String()),
		zap.String("reason", choice.Reason))
	rec := &recoveryRecord{Report: rep, Expected: rep.Plan.Expected}
	if err := d.saveRecovery(rec); err != nil {
		return rep, fmt.Errorf("nothing was changed: %w", err)
	}
	err = d.carryOut(context.WithoutCancel(ctx), rec)
	if err != nil {
		d.log.Error("recovery failed", zap.String("recovery", rep.ID), zap.Error(err))
		return rep, err
	}
	d.log.Info("recovery done: every peer verified", zap.String("recovery", rep.ID))
	return rep, nil
}

// busyHosts refuses to plan while a host still carries out a step of a recovery (whose orchestrating daemon may
// have died): its peer is changing under the inventory.
func busyHosts(invs []statebackup.HostInventory) error {
	for _, inv := range invs {
		if inv.Busy != "" {
			return fmt.Errorf("host %s is still carrying out the %s (asked by a daemon that may be gone); nothing was "+
				"changed, run recover again once it ends", plan.ShortID(inv.Host), inv.Busy)
		}
	}
	return nil
}

// choose is the copy the operator gave (--from, always rebuilt on this host) or the best one the hosts hold.
func (d *Daemon) choose(req control.RecoverRequest, invs []statebackup.HostInventory) (statebackup.Choice, error) {
	if req.From == "" {
		return statebackup.Choose(invs)
	}
	if !filepath.IsAbs(req.From) {
		return statebackup.Choice{}, fmt.Errorf("--from %s: the path must be absolute", req.From)
	}
	fi, err := os.Stat(req.From)
	if err != nil {
		return statebackup.Choice{}, fmt.Errorf("reading the export given with --from: %w", err)
	}
	n, err := statebackup.CountExport(req.From)
	if err != nil {
		return statebackup.Choice{}, fmt.Errorf("reading the export given with --from: %w", err)
	}
	src := statebackup.Source{Host: d.node.ID().String(), Kind: statebackup.SourceFile, File: req.From, Pins: n,
		Time: fi.ModTime()}
	return statebackup.Choice{Source: src, Reason: fmt.Sprintf(
		"the operator gave this export (--from, %d pins); it is rebuilt on the host where recover runs", n)}, nil
}

func sameSource(a, b statebackup.Source) bool {
	return a.Host == b.Host && a.Kind == b.Kind && a.Backup == b.Backup && a.File == b.File
}

// carryOut runs the plan's steps in order from rec.Next and stops at the first that fails; each result is
// recorded in the report, and where the recovery stands is saved after every step. A recovery that ends, done or
// failed, is marked so: only one interrupted by the daemon's death is resumed.
func (d *Daemon) carryOut(ctx context.Context, rec *recoveryRecord) error {
	err := d.runSteps(ctx, rec)
	if ctx.Err() != nil {
		return err // the daemon is stopping: the record stays open, to be resumed
	}
	rec.Ended = "done"
	if err != nil {
		rec.Ended = "failed: " + err.Error()
	}
	if serr := d.saveRecovery(rec); serr != nil && err == nil {
		err = serr
	}
	return err
}

func (d *Daemon) runSteps(ctx context.Context, rec *recoveryRecord) error {
	rep, p := rec.Report, rec.Report.Plan
	for ; rec.Next < len(p.Steps); rec.Next++ {
		st := p.Steps[rec.Next]
		args := stepArgs{Recovery: rep.ID, Source: p.Choice.Source, Addr: rec.Addr, Pins: rec.Expected}
		var ans stepAnswer
		cctx, cancel := context.WithTimeout(ctx, stepTimeout)
		err := d.call(cctx, st.Host, string(st.Action), args, &ans)
		cancel()
		res := control.StepResult{Step: st, OK: err == nil, Detail: ans.Detail}
		if err != nil {
			res.Error = err.Error()
		}
		rep.Results = append(rep.Results, res)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", st.Action, plan.ShortID(st.Host), err)
		}
		switch {
		case st.Action == statebackup.ActRebuild:
			rec.Addr = ans.Addr
			rec.Expected = max(rec.Expected, ans.Pins) // a live copy is exported at the rebuild and may have grown
		case st.Action == statebackup.ActVerify && st.Host == p.Rebuild:
			rec.Expected = max(rec.Expected, ans.Pins) // a folder copy's count is known once its peer answers
		}
		next := *rec
		next.Next++
		if err := d.saveRecovery(&next); err != nil {
			return err
		}
	}
	return nil
}
