package statebackup

// The recovery planner: given what every reachable host holds (its peer's live pinset, its backups, the state
// folders in its peer's config folder), choose the copy of the pinset to rebuild the cluster from, say why, and
// list the steps that rebuild it. Pure: no files, no network, so every decision is a table test.

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// BackupInfo is one stored backup of a host and whether it re-read as its manifest says.
type BackupInfo struct {
	Manifest *Manifest `json:"manifest"`
	Verified bool      `json:"verified"`
	Problem  string    `json:"problem,omitempty"` // why it failed verification
}

// FolderInfo is a state folder (raft/, raft.old.N, pebble/, badger/...) found in a peer's config folder.
type FolderInfo struct {
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

// HostInventory is what one host answers about the state it holds.
type HostInventory struct {
	Host        string `json:"host"` // the daemon's peer ID
	ClusterPeer string `json:"cluster_peer"`
	Name        string `json:"name,omitempty"`
	Consensus   string `json:"consensus"`
	// Reachable is false when the daemon did not answer; Error says why. Nothing else is known then.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// LivePins is the pin count the running peer answers with, or -1 when its REST API does not answer.
	LivePins  int    `json:"live_pins"`
	LiveError string `json:"live_error,omitempty"`
	// Version is the version the peer runs (or the installed current one when it does not answer).
	Version   string       `json:"version"`
	Installed []string     `json:"installed,omitempty"`
	Backups   []BackupInfo `json:"backups,omitempty"`
	Folders   []FolderInfo `json:"folders,omitempty"`
	// At is when the inventory was taken: the time of the live pinset.
	At time.Time `json:"at"`
	// LastRecovery is the newest recovery journaled on the host: a recovery interrupted before it is not resumed.
	LastRecovery string `json:"last_recovery,omitempty"`
	// Busy names the recovery step the host is carrying out when asked, for whichever daemon asked it.
	Busy string `json:"busy,omitempty"`
}

// SourceKind says which kind of copy a recovery rebuilds from.
type SourceKind string

const (
	// SourceLive is a running peer's pinset; it is exported (and verified) right before the rebuild.
	SourceLive SourceKind = "live"
	// SourceBackup is a stored, verified export (live or offline).
	SourceBackup SourceKind = "backup"
	// SourceFolder is a stored, verified copy of a state folder, whose pin count is unknown.
	SourceFolder SourceKind = "folder-copy"
	// SourceFile is an export file the operator gave (--from).
	SourceFile SourceKind = "file"
)

// Source is one copy of the pinset a recovery could start from.
type Source struct {
	Host    string     `json:"host"`
	Kind    SourceKind `json:"kind"`
	Backup  string     `json:"backup,omitempty"` // the backup ID, for SourceBackup and SourceFolder
	File    string     `json:"file,omitempty"`   // for SourceFile
	Pins    int        `json:"pins"`             // -1 when unknown (a folder copy)
	Time    time.Time  `json:"time"`
	Version string     `json:"version,omitempty"` // the version that wrote it
}

func (s Source) String() string {
	what := string(s.Kind)
	switch s.Kind {
	case SourceBackup, SourceFolder:
		what += " " + s.Backup
	case SourceFile:
		what += " " + s.File
	case SourceLive:
		what = "live pinset"
	}
	pins := "unknown pins"
	if s.Pins >= 0 {
		pins = fmt.Sprintf("%d pins", s.Pins)
	}
	return fmt.Sprintf("%s on %s (%s)", what, shortHost(s.Host), pins)
}

// Choice is the copy chosen, why, and what was set aside and why.
type Choice struct {
	Source Source   `json:"source"`
	Reason string   `json:"reason"`
	Notes  []string `json:"notes,omitempty"`
}

// ErrNoCopy means no reachable host holds a usable copy of the pinset.
var ErrNoCopy = errors.New("no reachable host holds a usable copy of the pinset")

// Candidates lists every usable copy the inventories show: live pinsets of peers that answer, verified exports,
// and verified state-folder copies. Unverified backups are left out.
func Candidates(invs []HostInventory) []Source {
	var out []Source
	for _, inv := range invs {
		if !inv.Reachable {
			continue
		}
		if inv.LivePins >= 0 {
			out = append(out, Source{Host: inv.Host, Kind: SourceLive, Pins: inv.LivePins, Time: inv.At, Version: inv.Version})
		}
		for _, b := range inv.Backups {
			if !b.Verified || b.Manifest == nil {
				continue
			}
			m := b.Manifest
			kind := SourceBackup
			if m.Kind == KindStateFolder {
				kind = SourceFolder
			}
			out = append(out, Source{Host: inv.Host, Kind: kind, Backup: m.ID, Pins: m.Pins, Time: m.Created,
				Version: m.ClusterVersion})
		}
	}
	return out
}

// better reports whether a is a better copy than b: more pins (a known count beats an unknown one), then a live
// pinset or export over a folder copy, then the freshest, then by host for a stable answer.
func better(a, b Source) bool {
	if a.Pins != b.Pins {
		return a.Pins > b.Pins
	}
	if (a.Kind == SourceFolder) != (b.Kind == SourceFolder) {
		return b.Kind == SourceFolder
	}
	if !a.Time.Equal(b.Time) {
		return a.Time.After(b.Time)
	}
	return a.Host+a.Backup < b.Host+b.Backup
}

// Choose picks the best copy among the inventories: the most pins among live pinsets and verified exports, then
// the freshest. A live pinset shorter than a verified backup is not trusted and the notes say so. A state-folder
// copy (whose count is unknown) is chosen only when no counted copy holds any pin.
func Choose(invs []HostInventory) (Choice, error) {
	cands := Candidates(invs)
	var counted, folders []Source
	for _, c := range cands {
		if c.Kind == SourceFolder {
			folders = append(folders, c)
		} else {
			counted = append(counted, c)
		}
	}
	sort.SliceStable(counted, func(i, j int) bool { return better(counted[i], counted[j]) })
	sort.SliceStable(folders, func(i, j int) bool { return better(folders[i], folders[j]) })
	notes := unverifiedNotes(invs)
	if len(counted) > 0 && counted[0].Pins > 0 {
		best := counted[0]
		notes = append(notes, shortLiveNotes(counted, best)...)
		return Choice{Source: best, Reason: reasonFor(best, counted[1:]), Notes: notes}, nil
	}
	if len(folders) > 0 {
		best := folders[0]
		return Choice{Source: best, Notes: notes, Reason: fmt.Sprintf(
			"no live pinset or verified export holds any pin; %s is the freshest verified copy of a state folder (%s, taken %s)",
			best, best.Backup, best.Time.UTC().Format(time.RFC3339))}, nil
	}
	return Choice{Notes: notes}, ErrNoCopy
}

func reasonFor(best Source, rest []Source) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s holds the most pins", best)
	if best.Kind == SourceLive {
		b.WriteString(" and is read now")
	} else {
		fmt.Fprintf(&b, " and re-read as its manifest says (taken %s)", best.Time.UTC().Format(time.RFC3339))
	}
	if len(rest) > 0 {
		if rest[0].Pins == best.Pins {
			fmt.Fprintf(&b, "; as many as %s, and fresher or preferred", rest[0])
		} else {
			fmt.Fprintf(&b, "; the next best is %s", rest[0])
		}
	}
	return b.String()
}

// shortLiveNotes names every live pinset shorter than the best copy: such a peer lost pins (the raft trap, a
// deleted folder) and its live view is not trusted.
func shortLiveNotes(counted []Source, best Source) []string {
	var out []string
	for _, c := range counted {
		if c.Kind == SourceLive && c.Pins < best.Pins {
			out = append(out, fmt.Sprintf("the live pinset of %s holds %d pins, %d fewer than %s: not trusted",
				shortHost(c.Host), c.Pins, best.Pins-c.Pins, best))
		}
	}
	return out
}

func unverifiedNotes(invs []HostInventory) []string {
	var out []string
	for _, inv := range invs {
		if !inv.Reachable {
			out = append(out, fmt.Sprintf("host %s did not answer (%s): its copies are not considered and it is not touched",
				shortHost(inv.Host), inv.Error))
			continue
		}
		for _, b := range inv.Backups {
			if !b.Verified && b.Manifest != nil {
				out = append(out, fmt.Sprintf("backup %s on %s failed verification (%s): not used", b.Manifest.ID,
					shortHost(inv.Host), b.Problem))
			}
		}
	}
	return out
}

// StepAction is what one recovery step does on its host.
type StepAction string

const (
	// ActClean stops the peer and moves its state aside (folders copied to backups, `state cleanup`).
	ActClean StepAction = "stop-and-clean"
	// ActRebuild stops the peer, keeps its state, puts the chosen copy in place and starts the peer alone.
	ActRebuild StepAction = "rebuild"
	// ActVerify waits until the peer answers with at least the expected pins.
	ActVerify StepAction = "verify"
	// ActJoin starts the cleaned peer with --bootstrap to the rebuilt one.
	ActJoin StepAction = "join"
)

// Step is one step of a recovery.
type Step struct {
	Host   string     `json:"host"`
	Action StepAction `json:"action"`
	Detail string     `json:"detail"`
}

// RecoveryPlan is a recovery to carry out: which host is rebuilt from which copy, and every step in order.
type RecoveryPlan struct {
	Choice  Choice `json:"choice"`
	Rebuild string `json:"rebuild"` // the host whose peer is rebuilt from the copy
	// Expected is the pin count every peer must reach (-1: the rebuilt peer's count once started).
	Expected int `json:"expected"`
	// VerifyAlone is whether the rebuilt peer is verified before the others join: a crdt peer serves alone; a raft
	// peer whose membership lists the others waits for them.
	VerifyAlone bool     `json:"verify_alone"`
	Steps       []Step   `json:"steps"`
	Untouched   []string `json:"untouched,omitempty"` // hosts that did not answer
}

// PlanRecovery lists the steps that rebuild the cluster from choice: every other reachable host is stopped and
// cleaned first (so that no peer with a short pinset serves while the copy is put in place), then the copy's host
// is rebuilt and started alone, then the others join it one at a time, each verified.
func PlanRecovery(invs []HostInventory, choice Choice) (*RecoveryPlan, error) {
	rebuild := choice.Source.Host
	var target *HostInventory
	for i := range invs {
		if invs[i].Host == rebuild && invs[i].Reachable {
			target = &invs[i]
		}
	}
	if target == nil {
		return nil, fmt.Errorf("planning the recovery: the host %s that holds the copy did not answer", shortHost(rebuild))
	}
	p := &RecoveryPlan{Choice: choice, Rebuild: rebuild, Expected: choice.Source.Pins,
		VerifyAlone: target.Consensus != "raft"}
	var others []string
	for _, inv := range invs {
		switch {
		case !inv.Reachable:
			p.Untouched = append(p.Untouched, inv.Host)
		case inv.Host != rebuild:
			others = append(others, inv.Host)
		}
	}
	sort.Strings(others)
	for _, h := range others {
		p.Steps = append(p.Steps, Step{Host: h, Action: ActClean,
			Detail: "stop the peer; copy its state folders to backups and run `state cleanup` (raft/ is kept as raft.old.N)"})
	}
	p.Steps = append(p.Steps, Step{Host: rebuild, Action: ActRebuild, Detail: rebuildDetail(choice.Source, target.Version)})
	if p.VerifyAlone {
		p.Steps = append(p.Steps, Step{Host: rebuild, Action: ActVerify, Detail: expectDetail(p.Expected)})
	}
	for _, h := range others {
		p.Steps = append(p.Steps,
			Step{Host: h, Action: ActJoin, Detail: "start the peer with --bootstrap to the rebuilt peer"},
			Step{Host: h, Action: ActVerify, Detail: expectDetail(p.Expected)})
	}
	if !p.VerifyAlone {
		p.Steps = append(p.Steps, Step{Host: rebuild, Action: ActVerify, Detail: expectDetail(p.Expected)})
	}
	return p, nil
}

func rebuildDetail(s Source, version string) string {
	var from string
	switch s.Kind {
	case SourceLive:
		from = "a live export of its pinset, taken and verified first"
	case SourceBackup:
		from = "backup " + s.Backup + " (`state import`)"
	case SourceFolder:
		from = "the state-folder copy " + s.Backup + " (a raft folder is restored in place; a datastore is exported " +
			"by the version that wrote it, " + orUnknownVersion(s.Version) + ", and imported)"
	case SourceFile:
		from = "the export " + s.File + " (`state import`)"
	}
	return fmt.Sprintf("stop the peer, keep its state (folder copies, `state cleanup`), put in %s with %s, start it alone",
		from, orUnknownVersion(version))
}

func expectDetail(n int) string {
	if n < 0 {
		return "the peer answers (pin count of a folder copy is unknown)"
	}
	return fmt.Sprintf("the peer answers with at least %d pins", n)
}

func orUnknownVersion(v string) string {
	if v == "" {
		return "the installed version"
	}
	return "version " + v
}

// shortHost shortens a peer ID for messages, as operators see it in `status`.
func shortHost(id string) string {
	if len(id) <= 6 {
		return id
	}
	return "*" + id[len(id)-6:]
}
