// Package plan is the replicated state of the upgrade daemons: the hosts that
// take part, the upgrade plans, and each host's progress through a plan.
//
// State.Apply is the only place this state changes. It is deterministic: it
// reads no clock and no randomness of its own (the time of each command is the
// raft log entry's, stamped by the leader), so every daemon that applies the
// same log reaches the same state. Side effects (stopping peers, swapping
// binaries) happen outside, in sidecar/agent, which watches this state.
package plan

import (
	"fmt"
	"sort"
	"time"
)

// Procedure is how the peers are moved to the target version.
type Procedure string

const (
	// Standard stops every peer together, swaps, migrates and starts them together.
	Standard Procedure = "standard"
	// Bootstrap removes peers one by one, upgrades a survivor and rejoins the others to it.
	Bootstrap Procedure = "bootstrap"
	// Rolling upgrades peers a few at a time while the others serve; only
	// possible when both versions speak the same cluster RPC protocol.
	Rolling Procedure = "rolling"
	// Auto chooses once the new binary is staged: rolling when the RPC
	// protocol is unchanged, else standard (crdt) or bootstrap (raft).
	Auto Procedure = "auto"
)

// Phase is where a whole plan stands.
type Phase string

const (
	PhaseProposed       Phase = "proposed"        // waiting for approvals from enough operator keys; nothing done yet
	PhaseScheduled      Phase = "scheduled"       // approved, waiting for its start time (--at) or a maintenance window
	PhasePreparing      Phase = "preparing"       // hosts stage binaries and back up state; nothing stopped yet
	PhaseSwitching      Phase = "switching"       // hosts stop, swap, migrate and start at SwitchAt, then verify
	PhaseDone           Phase = "done"            // every host verified on the target version
	PhaseFailed         Phase = "failed"          // failed before anything was stopped; nothing to undo
	PhaseRollingBack    Phase = "rolling-back"    // hosts return to their previous version and state
	PhaseRolledBack     Phase = "rolled-back"     // every host verified back on its previous version
	PhaseRollbackFailed Phase = "rollback-failed" // some host could not be proven back: an operator must look
)

// Terminal reports whether no further step will be taken in this phase.
func (p Phase) Terminal() bool {
	switch p {
	case PhaseDone, PhaseFailed, PhaseRolledBack, PhaseRollbackFailed:
		return true
	}
	return false
}

// Step is where one host stands within a plan.
type Step string

const (
	StepPending     Step = "pending"      // nothing done yet
	StepPreparing   Step = "preparing"    // fetching, verifying, backing up
	StepPrepared    Step = "prepared"     // ready to switch
	StepStopping    Step = "stopping"     // stopping the peer and taking the offline backups
	StepSwapping    Step = "swapping"     // switching binaries and running migrations
	StepStarting    Step = "starting"     // new version started, waiting for it to be healthy
	StepVerified    Step = "verified"     // target version, full pinset, all peers seen
	StepFailed      Step = "failed"       // this host failed its part; Error says why
	StepRollingBack Step = "rolling-back" // returning to the previous version
	StepRolledBack  Step = "rolled-back"  // back on the previous version, verified
	StepRollbackErr Step = "rollback-failed"

	// Steps of the bootstrap procedure.
	StepRemoving  Step = "removing"  // leaving the cluster: peers rm, stop, state cleanup (old state kept)
	StepRemoved   Step = "removed"   // out of the cluster, waiting to rejoin
	StepRejoining Step = "rejoining" // started on the target with --bootstrap to the survivor
	StepLeftOut   Step = "left-out"  // could not rejoin after retries; the rest of the cluster serves without it
)

// Task is what the bootstrap procedure asks of one host now. Tasks are set by
// State.Apply alone, one host at a time, so whichever daemon leads, the
// sequence goes on from the recorded step.
type Task string

const (
	TaskRemove    Task = "remove"     // leave the cluster, keeping the old state
	TaskUpgrade   Task = "upgrade"    // the survivor: swap, migrate, start alone, verify the full pinset
	TaskRejoin    Task = "rejoin"     // a removed host: swap, start with --bootstrap to the survivor, verify
	TaskRestore   Task = "restore"    // rollback of the survivor: old binary, old state, start alone
	TaskRejoinOld Task = "rejoin-old" // rollback of a removed host: old binary, --bootstrap to the survivor
)

// Artifact is one file to fetch: a binary or a release tarball, with its mandatory sha256.
type Artifact struct {
	Source string `json:"source"`
	SHA256 string `json:"sha256"`
}

// Announcement is the signed request of an operator to move the cluster to a version.
type Announcement struct {
	ID             string     `json:"id"` // random, unique: the replay key
	Version        string     `json:"version"`
	Artifacts      []Artifact `json:"artifacts"`
	Procedure      Procedure  `json:"procedure"`
	AllowDowngrade bool       `json:"allow_downgrade,omitempty"`
	// Rolling options.
	MaxUnavailable int           `json:"max_unavailable,omitempty"` // peers upgraded at once (default 1)
	Settle         time.Duration `json:"settle,omitempty"`          // wait between two batches
	Canary         int           `json:"canary,omitempty"`          // peers upgraded first, alone
	Soak           time.Duration `json:"soak,omitempty"`            // how long the canaries stay healthy before the rest
	// AllowFailedVersion accepts a version that an earlier plan rolled back.
	AllowFailedVersion bool `json:"allow_failed_version,omitempty"`
	// At is the earliest start the operator asked for (announce --at).
	At        time.Time `json:"at,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Validate checks what can be checked without the cluster's state.
func (a *Announcement) Validate() error {
	switch {
	case a.ID == "":
		return fmt.Errorf("announcement has no id")
	case a.Version == "":
		return fmt.Errorf("announcement has no target version")
	case len(a.Artifacts) == 0:
		return fmt.Errorf("announcement has no artifact")
	case a.ExpiresAt.IsZero() || a.IssuedAt.IsZero():
		return fmt.Errorf("announcement has no issue or expiry time")
	case !a.ExpiresAt.After(a.IssuedAt):
		return fmt.Errorf("announcement expires (%s) before it was issued (%s)", a.ExpiresAt, a.IssuedAt)
	}
	switch a.Procedure {
	case Standard, Bootstrap, Rolling, Auto:
	default:
		return fmt.Errorf("unknown procedure %q (want auto, rolling, standard or bootstrap)", a.Procedure)
	}
	if a.MaxUnavailable < 0 || a.Canary < 0 || a.Settle < 0 || a.Soak < 0 {
		return fmt.Errorf("max-unavailable, canary, settle and soak must not be negative")
	}
	for i, art := range a.Artifacts {
		if art.Source == "" {
			return fmt.Errorf("artifact %d has no source", i+1)
		}
		if !isSHA256Hex(art.SHA256) {
			return fmt.Errorf("artifact %s: sha256 must be 64 hex characters, got %q", art.Source, art.SHA256)
		}
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Host is a daemon taking part in the cluster, and the cluster peer beside it.
type Host struct {
	ID          string   `json:"id"`           // the daemon's peer ID
	ClusterPeer string   `json:"cluster_peer"` // the IPFS Cluster peer ID beside it
	Name        string   `json:"name,omitempty"`
	Addrs       []string `json:"addrs,omitempty"`
	Version     string   `json:"version,omitempty"` // cluster version it last reported
	// Policy is who may start a plan on this host: it must be the same on every host.
	Policy Policy `json:"policy"`
	// ClusterAddrs are the cluster peer's own multiaddrs (with /p2p/), for --bootstrap.
	ClusterAddrs []string  `json:"cluster_addrs,omitempty"`
	Consensus    string    `json:"consensus,omitempty"`
	Updated      time.Time `json:"updated"`
}

// HostProgress is one host's state within a plan.
type HostProgress struct {
	Step        Step   `json:"step"`
	FromVersion string `json:"from_version,omitempty"` // version before the plan: the rollback target
	Version     string `json:"version,omitempty"`      // version last seen running
	Pins        int    `json:"pins"`                   // pins last counted
	BackupPins  int    `json:"backup_pins"`            // pins in the verified live backup
	RPCRunning  string `json:"rpc_running,omitempty"`  // cluster RPC protocol of the running peer
	RPCStaged   string `json:"rpc_staged,omitempty"`   // cluster RPC protocol of the staged binary (auto)
	Error       string `json:"error,omitempty"`        // last error, kept after recovery for the record
	Detail      string `json:"detail,omitempty"`       // what the host is doing, in words
	// Seq orders one host's reports (its clock at the report, in ns): a
	// report older than the one on record arrived late and is ignored.
	Seq         int64     `json:"seq,omitempty"`
	Updated     time.Time `json:"updated"`
	StepStarted time.Time `json:"step_started"`
}

// Plan is one upgrade, from announcement to its end.
type Plan struct {
	Announcement
	Signer   string                   `json:"signer"`
	Phase    Phase                    `json:"phase"`
	Reason   string                   `json:"reason,omitempty"` // why the plan is in its phase (failures)
	Created  time.Time                `json:"created"`
	Updated  time.Time                `json:"updated"`
	Deadline time.Time                `json:"deadline"`            // of the current phase
	Since    time.Time                `json:"since"`               // when the current phase began
	SwitchAt time.Time                `json:"switch_at,omitempty"` // when every host stops, in switching
	Hosts    map[string]*HostProgress `json:"hosts"`
	Timeouts Timeouts                 `json:"timeouts"`

	// Approvals: the operator keys that signed exactly this plan's content, by
	// peer ID, with their signed envelopes so that any host can check them.
	Policy    Policy              `json:"policy"`
	Approvals map[string]Approval `json:"approvals,omitempty"`

	// Paused holds the plan where it is (no new step starts; failures still
	// roll back); Control says who paused, resumed or aborted it, and when.
	Paused   bool      `json:"paused,omitempty"`
	PausedAt time.Time `json:"paused_at,omitempty"`
	Control  string    `json:"control,omitempty"`

	// NotBefore is when a scheduled plan starts (--at and the maintenance windows).
	NotBefore time.Time `json:"not_before,omitempty"`

	// Chosen is the procedure carried out (Auto resolves when every host is
	// prepared), and ChoiceReason why.
	Chosen       Procedure `json:"chosen,omitempty"`
	ChoiceReason string    `json:"choice_reason,omitempty"`

	// Rolling procedure only: the hosts being upgraded now, the batch number,
	// and when the next batch may start (settle or canary soak).
	Batch       []string  `json:"batch,omitempty"`
	BatchSize   int       `json:"batch_size,omitempty"` // max-unavailable, clamped to keep a raft majority
	BatchNumber int       `json:"batch_number,omitempty"`
	NextBatchAt time.Time `json:"next_batch_at,omitempty"`

	// Bootstrap procedure only.
	Survivor       string          `json:"survivor,omitempty"`        // host that stays and is upgraded alone
	SurvivorReason string          `json:"survivor_reason,omitempty"` // why it was chosen
	Order          []string        `json:"order,omitempty"`           // the other hosts, in removal and rejoin order
	Tasks          map[string]Task `json:"tasks,omitempty"`           // what each host is asked to do now
}

// Timeouts bound each phase of a plan; a host silent past one causes failure or rollback.
type Timeouts struct {
	Prepare  time.Duration `json:"prepare"`
	Switch   time.Duration `json:"switch"` // from SwitchAt to every host verified (and for arming it, see Plan.Arming)
	Rollback time.Duration `json:"rollback"`
	Barrier  time.Duration `json:"barrier"` // delay between commit of the switch and the stop, for every host to learn it
}

// DefaultTimeouts are used when a plan is proposed without its own.
func DefaultTimeouts() Timeouts {
	return Timeouts{Prepare: 10 * time.Minute, Switch: 5 * time.Minute, Rollback: 5 * time.Minute, Barrier: 300 * time.Millisecond}
}

// BarrierPerHost is what each host beyond three adds to a plan's barrier.
// The leader replicates the switch to every daemon before each can arm its
// timer, so the time for the last one to learn it grows with their number; a
// barrier shorter than that makes the late learners stop late, and the
// restart skew is theirs.
const BarrierPerHost = 20 * time.Millisecond

// ForHosts returns t with the barrier lengthened for a plan of n hosts: the
// configured barrier covers three, and each host beyond adds BarrierPerHost
// (300ms at 3 hosts, 1.24s at 50, 2.24s at 100 by default). The proposer
// computes it, so every daemon applies the same plan whatever its version.
func (t Timeouts) ForHosts(n int) Timeouts {
	if n > 3 {
		t.Barrier += time.Duration(n-3) * BarrierPerHost
	}
	return t
}

// begin starts an approved plan now, or schedules it for its start time:
// the later of --at and the next opening of a maintenance window.
func (p *Plan) begin(at time.Time) {
	from := at
	if p.At.After(from) {
		from = p.At
	}
	start, ok := NextStart(p.Policy.Windows, from)
	if !ok { // no window within a week: wait until the proposal expires
		start = p.ExpiresAt
	}
	if start.After(at) {
		p.setPhase(PhaseScheduled, at)
		p.NotBefore, p.Deadline = start, start
		return
	}
	p.setPhase(PhasePreparing, at)
	p.Deadline = at.Add(p.Timeouts.Prepare)
}

func (p *Plan) setPhase(ph Phase, at time.Time) {
	if p.Phase != ph {
		p.Phase, p.Since = ph, at
	}
}

// Arming reports whether p is a standard plan whose hosts are all prepared
// and whose switch time is not set yet. The leader sets it (OpArm) once every
// daemon holds the plan in this phase, or after ArmWait: a time set at once
// (the commit plus the barrier) passed before some daemons even received
// it when their raft logs lagged (at N=100 on one 2-core machine, elections
// during the preparation left every daemon learning it 13 s to 2.5 min late).
// Nothing is stopped while arming; an abort or the deadline ends the plan
// as failed.
func (p *Plan) Arming() bool {
	return p.Phase == PhaseSwitching && p.Proc() == Standard && p.SwitchAt.IsZero()
}

// ArmWait is how long the leader waits for every daemon to hold a switch
// before it arms it anyway (a daemon that is down would otherwise hold the
// plan until its deadline): the hosts that did not hear of it stop late.
func (p *Plan) ArmWait() time.Duration {
	return min(2*time.Minute, p.Timeouts.Switch/2)
}

// Proc is the procedure carried out: the chosen one once known.
func (p *Plan) Proc() Procedure {
	if p.Chosen != "" {
		return p.Chosen
	}
	return p.Procedure
}

// HostIDs returns the plan's hosts in a stable order.
func (p *Plan) HostIDs() []string {
	ids := make([]string, 0, len(p.Hosts))
	for id := range p.Hosts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Clone returns a deep copy, safe to hand to readers outside the FSM lock.
func (p *Plan) Clone() *Plan {
	c := *p
	c.Artifacts = append([]Artifact(nil), p.Artifacts...)
	c.Order = append([]string(nil), p.Order...)
	c.Batch = append([]string(nil), p.Batch...)
	c.Policy.Trusted = append([]string(nil), p.Policy.Trusted...)
	if p.Approvals != nil {
		c.Approvals = make(map[string]Approval, len(p.Approvals))
		for id, ap := range p.Approvals {
			c.Approvals[id] = ap
		}
	}
	if p.Tasks != nil {
		c.Tasks = make(map[string]Task, len(p.Tasks))
		for id, t := range p.Tasks {
			c.Tasks[id] = t
		}
	}
	c.Hosts = make(map[string]*HostProgress, len(p.Hosts))
	for id, h := range p.Hosts {
		hc := *h
		c.Hosts[id] = &hc
	}
	return &c
}

// Succeeded reports whether the plan ended with every host verified on the target.
func (p *Plan) Succeeded() bool {
	if p.Phase != PhaseDone {
		return false
	}
	for _, h := range p.Hosts {
		if h.Step != StepVerified {
			return false
		}
	}
	return true
}
