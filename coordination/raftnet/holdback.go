package raftnet

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Voters first: hashicorp/raft hands a new entry to every member's
// replication goroutine at once, and a commit needs answers from the voters
// only. In a large group on few cores the voters then queue for the CPU
// behind every non-voter doing the same work (decoding, writing the entry
// to bolt, answering): at 100 daemons on 2 cores the leader waited ~630 ms
// for a 7.5 KB command to commit. So the leader's transport holds an append
// to a non-voter that carries commands until the voters have committed the
// first of them, for at most holdbackMax, and then sends what is committed
// with the commit index as it is now: the non-voter applies the commands on
// receipt instead of waiting for the next commit notice.
//
// Only appends that carry commands wait. Heartbeats, empty appends (commit
// notices), barriers, no-ops and configuration changes go at once, as do
// appends to voters and to members the leader has not classified yet (a
// daemon that just joined): a voter wrongly held would slow the commit.

// holdbackMax bounds how long an append to a non-voter waits for the voters.
// A group that cannot commit (voters down) thus only delays its non-voters.
const holdbackMax = 300 * time.Millisecond

// commitView is what the hold needs of raft: how far the log is committed,
// and whether this node still leads.
type commitView interface {
	CommitIndex() uint64
	State() raft.RaftState
}

// holdback holds a leader's appends to non-voters until the voters commit
// what they carry. The zero value holds nothing until use and setNonvoters.
type holdback struct {
	max time.Duration

	raft atomic.Pointer[commitView]
	// nonvoters is read by every append; smu orders its writers.
	nonvoters atomic.Pointer[map[raft.ServerID]bool]
	smu       sync.Mutex
	promoted  map[raft.ServerID]bool // promotions not yet seen in a configuration

	mu      sync.Mutex
	changed chan struct{} // closed by wake; nil while nobody waits

	held, timedOut atomic.Int64 // appends held, and those sent after max

	// fence, while some quiet is under way, is one more than the commit
	// index when the first of them began: commands committed past it are
	// not released (0: no quiet). quiets counts them, under qmu.
	fence  atomic.Uint64
	qmu    sync.Mutex
	quiets int
}

// quiet stops releasing commands committed from now on to non-voters, until
// release is called or max has passed; quiets under way at once end with
// the last of them.
func (h *holdback) quiet(max time.Duration) (release func()) {
	h.qmu.Lock()
	if h.quiets == 0 {
		var commit uint64
		if rp := h.raft.Load(); rp != nil {
			commit = (*rp).CommitIndex()
		}
		h.fence.Store(commit + 1)
	}
	h.quiets++
	h.qmu.Unlock()
	var once sync.Once
	end := func() {
		once.Do(func() {
			h.qmu.Lock()
			if h.quiets--; h.quiets == 0 {
				h.fence.Store(0)
			}
			h.qmu.Unlock()
			h.wake()
		})
	}
	t := time.AfterFunc(max, end)
	return func() {
		t.Stop()
		end()
	}
}

// released is how far the log may be given to non-voters: the commit index,
// or less while a quiet is under way.
func (h *holdback) released(r commitView) uint64 {
	commit := r.CommitIndex()
	if f := h.fence.Load(); f != 0 && f-1 < commit {
		return f - 1
	}
	return commit
}

func newHoldback(max time.Duration) *holdback { return &holdback{max: max} }

// use starts holding, with r as the source of the commit index.
func (h *holdback) use(r commitView) { h.raft.Store(&r) }

// setNonvoters records which members are non-voters in the leader's current
// configuration. A nil conf (no configuration known) holds nobody and
// forgets the promotions under way.
func (h *holdback) setNonvoters(conf []raft.Server) {
	h.smu.Lock()
	defer h.smu.Unlock()
	if conf == nil {
		h.nonvoters.Store(nil)
		h.promoted = nil
		return
	}
	m := make(map[raft.ServerID]bool, len(conf))
	for _, s := range conf {
		switch {
		case s.Suffrage == raft.Voter:
			delete(h.promoted, s.ID) // the promotion is in the configuration
		case h.promoted[s.ID]:
			// Read before the promotion's change was appended.
		default:
			m[s.ID] = true
		}
	}
	h.nonvoters.Store(&m)
}

// promoting stops holding id at once, before the change that makes it a
// voter is appended: from then on its answer may count for commits. A
// configuration read before that change does not make it a non-voter again.
func (h *holdback) promoting(id raft.ServerID) {
	h.smu.Lock()
	defer h.smu.Unlock()
	if h.promoted == nil {
		h.promoted = map[raft.ServerID]bool{}
	}
	h.promoted[id] = true
	old := h.nonvoters.Load()
	if old == nil || !(*old)[id] {
		return
	}
	m := make(map[raft.ServerID]bool, len(*old))
	for k := range *old {
		if k != id {
			m[k] = true
		}
	}
	h.nonvoters.Store(&m)
}

// isNonvoter reports whether id is a non-voter as far as the leader knows.
func (h *holdback) isNonvoter(id raft.ServerID) bool {
	m := h.nonvoters.Load()
	return m != nil && (*m)[id]
}

// wake tells the waiting appends to look again: something was applied or
// the leadership changed.
func (h *holdback) wake() {
	h.mu.Lock()
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
	h.mu.Unlock()
}

func (h *holdback) waitCh() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

// hold returns when args may be sent to member id, and reports whether it
// held or cut args (false: args go as raft built them, but for the commit
// index). It waits until the first command args carries is committed; then
// it sends the entries committed so far, with the current commit index,
// and leaves the rest to raft's next request (which will wait for them in
// turn): a non-voter gets each command as soon as it is committed, not
// when the last of a batch that grew while it waited is. Having waited the
// full max, or lost the leadership, it sends args whole.
func (h *holdback) hold(id raft.ServerID, args *raft.AppendEntriesRequest) bool {
	first := firstCommand(args.Entries)
	if first == 0 {
		return false
	}
	rp := h.raft.Load()
	if rp == nil || !h.isNonvoter(id) {
		return false
	}
	r := *rp
	if commit := h.released(r); commit >= lastCommand(args.Entries) {
		args.LeaderCommitIndex = max(args.LeaderCommitIndex, commit)
		return false
	}
	h.held.Add(1)
	timer := time.NewTimer(h.max)
	defer timer.Stop()
	for {
		changed := h.waitCh() // before looking, so that no wake is missed
		commit := h.released(r)
		if commit >= first {
			// raft reads what was sent from args.Entries once answered, so
			// the member's next index follows the cut.
			n := len(args.Entries)
			for n > 0 && args.Entries[n-1].Index > commit {
				n--
			}
			args.Entries = args.Entries[:n]
			args.LeaderCommitIndex = max(args.LeaderCommitIndex, commit)
			return true
		}
		if r.State() != raft.Leader {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			h.timedOut.Add(1)
			return true
		}
	}
}

// firstCommand is the index of the first command among entries, 0 if none.
func firstCommand(entries []*raft.Log) uint64 {
	for _, e := range entries {
		if e.Type == raft.LogCommand {
			return e.Index
		}
	}
	return 0
}

// lastCommand is the index of the last command among entries, 0 if none.
func lastCommand(entries []*raft.Log) uint64 {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Type == raft.LogCommand {
			return entries[i].Index
		}
	}
	return 0
}

// wakingFSM wakes the held appends after each command the FSM applies: the
// leader applies a command only once it is committed.
type wakingFSM struct {
	raft.FSM
	h *holdback
}

func (f wakingFSM) Apply(l *raft.Log) any {
	out := f.FSM.Apply(l)
	f.h.wake()
	return out
}
