package raftnet

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

type fakeView struct {
	commit atomic.Uint64
	leads  atomic.Bool
}

func (f *fakeView) CommitIndex() uint64 { return f.commit.Load() }
func (f *fakeView) State() raft.RaftState {
	if f.leads.Load() {
		return raft.Leader
	}
	return raft.Follower
}

func newTestHoldback(max time.Duration, commit uint64) (*holdback, *fakeView) {
	h := newHoldback(max)
	v := &fakeView{}
	v.commit.Store(commit)
	v.leads.Store(true)
	h.use(v)
	h.setNonvoters([]raft.Server{{ID: "v1", Suffrage: raft.Voter}, {ID: "v2", Suffrage: raft.Voter}, {ID: "nv", Suffrage: raft.Nonvoter}})
	return h, v
}

func appendOf(commit uint64, entries ...*raft.Log) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{LeaderCommitIndex: commit, Entries: entries}
}

func entry(i uint64, kind raft.LogType) *raft.Log { return &raft.Log{Index: i, Type: kind} }

func TestHoldbackLetsThroughWhatNeedNotWait(t *testing.T) {
	h, _ := newTestHoldback(time.Hour, 4)
	cmd := entry(5, raft.LogCommand)
	for _, c := range []struct {
		what string
		id   raft.ServerID
		args *raft.AppendEntriesRequest
	}{
		{"a command to a voter", "v1", appendOf(4, cmd)},
		{"a command to a member not classified yet", "newcomer", appendOf(4, cmd)},
		{"a heartbeat to a non-voter", "nv", &raft.AppendEntriesRequest{}},
		{"a commit notice to a non-voter", "nv", appendOf(4)},
		{"a barrier, a no-op and a configuration change to a non-voter", "nv",
			appendOf(4, entry(5, raft.LogBarrier), entry(6, raft.LogNoop), entry(7, raft.LogConfiguration))},
		{"a command already committed to a non-voter", "nv", appendOf(3, entry(4, raft.LogCommand))},
	} {
		done := make(chan bool)
		go func() { done <- h.hold(c.id, c.args) }()
		select {
		case waited := <-done:
			if waited {
				t.Errorf("%s: held", c.what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still held after 10s", c.what)
		}
	}
	if n := h.held.Load(); n != 0 {
		t.Errorf("held %d appends, want none", n)
	}
}

func TestHoldbackHoldsANonvotersCommandsUntilCommitted(t *testing.T) {
	h, v := newTestHoldback(time.Hour, 4)
	args := appendOf(3, entry(5, raft.LogBarrier), entry(6, raft.LogCommand), entry(7, raft.LogCommand), entry(8, raft.LogBarrier))
	done := make(chan bool)
	go func() { done <- h.hold("nv", args) }()

	// A commit short of the first command, or a wake without a commit,
	// frees nothing.
	v.commit.Store(5)
	h.wake()
	select {
	case <-done:
		t.Fatal("sent before the first command (6) was committed")
	case <-time.After(100 * time.Millisecond):
	}
	v.commit.Store(6)
	h.wake()
	select {
	case waited := <-done:
		if !waited {
			t.Error("hold said it did not wait")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still held 10s after the commit")
	}
	if args.LeaderCommitIndex != 6 {
		t.Errorf("sent with commit index %d, want the current 6", args.LeaderCommitIndex)
	}
	if got := entryIndexes(args); !slices.Equal(got, []uint64{5, 6}) {
		t.Errorf("sent entries %v, want the committed 5 and 6", got)
	}

	// The rest: the command is committed now, the barrier after it is not.
	v.commit.Store(7)
	rest := appendOf(6, entry(7, raft.LogCommand), entry(8, raft.LogBarrier))
	if h.hold("nv", rest) {
		t.Error("held an append whose commands are committed")
	}
	if got := entryIndexes(rest); rest.LeaderCommitIndex != 7 || !slices.Equal(got, []uint64{7, 8}) {
		t.Errorf("sent entries %v with commit index %d, want 7 and 8 with 7", got, rest.LeaderCommitIndex)
	}
	if n := h.timedOut.Load(); n != 0 {
		t.Errorf("%d holds timed out", n)
	}
}

func entryIndexes(args *raft.AppendEntriesRequest) []uint64 {
	var out []uint64
	for _, e := range args.Entries {
		out = append(out, e.Index)
	}
	return out
}

func TestHoldbackGivesUpAfterMaxOrWhenNoLongerLeader(t *testing.T) {
	h, v := newTestHoldback(50*time.Millisecond, 4)
	args := appendOf(4, entry(5, raft.LogCommand))
	start := time.Now()
	if !h.hold("nv", args) {
		t.Error("hold said it did not wait")
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("gave up after %v, before max", took)
	}
	if n := h.timedOut.Load(); n != 1 {
		t.Errorf("timed out %d times, want 1", n)
	}
	if args.LeaderCommitIndex != 4 || len(args.Entries) != 1 {
		t.Errorf("sent %d entries with commit index %d, want the whole append with 4", len(args.Entries), args.LeaderCommitIndex)
	}

	h.max = time.Hour
	done := make(chan struct{})
	go func() { h.hold("nv", appendOf(4, entry(5, raft.LogCommand))); close(done) }()
	time.Sleep(20 * time.Millisecond)
	v.leads.Store(false)
	h.wake()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("still held 10s after leadership was lost")
	}
}

func TestHoldbackStopsHoldingAPromotedMember(t *testing.T) {
	h, _ := newTestHoldback(time.Hour, 4)
	h.promoting("nv")
	if h.hold("nv", appendOf(4, entry(5, raft.LogCommand))) {
		t.Error("held a member being promoted")
	}
	// A configuration read before the promotion's change, stored after
	// the promotion, does not undo it; the change's own is taken.
	h.setNonvoters([]raft.Server{{ID: "v1", Suffrage: raft.Voter}, {ID: "nv", Suffrage: raft.Nonvoter}})
	if h.isNonvoter("nv") {
		t.Error("a configuration read before the promotion undid it")
	}
	h.setNonvoters([]raft.Server{{ID: "v1", Suffrage: raft.Voter}, {ID: "nv", Suffrage: raft.Voter}, {ID: "nv2", Suffrage: raft.Nonvoter}})
	if h.isNonvoter("nv") || !h.isNonvoter("nv2") {
		t.Error("the promotion's configuration was not taken")
	}
	// Demoted again later: held again.
	h.setNonvoters([]raft.Server{{ID: "v1", Suffrage: raft.Voter}, {ID: "nv", Suffrage: raft.Nonvoter}})
	if !h.isNonvoter("nv") {
		t.Error("a member demoted after its promotion is not held")
	}
	h.setNonvoters(nil)
	if h.hold("nv", appendOf(4, entry(5, raft.LogCommand))) {
		t.Error("held with no configuration known")
	}
}

// groupWithANonvoter starts a real group of three voters and a non-voter,
// whose leader holds appends to the non-voter for up to a minute, and
// waits until the leader knows the non-voter as one.
func groupWithANonvoter(t *testing.T) (ms []*member, leader *member, nonvoters []string) {
	t.Helper()
	// Long timeouts: the tests watch one leader, which a busy machine must
	// not depose.
	ms = group(t, 4, testLogger(t), func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 3*time.Second, 3*time.Second, time.Second
		c.MaxVoters = 3
		c.holdbackMax = time.Minute
	})
	_, nonvoters = waitSuffrage(t, ms, 3, 1)
	if leader = currentLeader(ms); leader == nil {
		t.Fatal("no leader")
	}
	eventually(t, 10*time.Second, "the leader knows the non-voter", func() bool {
		return leader.raft.hold.isNonvoter(raft.ServerID(nonvoters[0]))
	})
	return ms, leader, nonvoters
}

// TestNonvotersGetCommandsOnceTheVotersCommitted runs a real group of three
// voters and a non-voter, and watches every append the leader sends.
func TestNonvotersGetCommandsOnceTheVotersCommitted(t *testing.T) {
	ms, leader, nonvoters := groupWithANonvoter(t)
	var mu sync.Mutex
	var early []string
	var toNonvoter, toVoters int
	f := func(id raft.ServerID, args *raft.AppendEntriesRequest) {
		idx := lastCommand(args.Entries)
		if idx == 0 {
			return
		}
		commit := leader.raft.R.CommitIndex()
		mu.Lock()
		defer mu.Unlock()
		if string(id) != nonvoters[0] {
			toVoters++
			return
		}
		toNonvoter++
		if commit < idx { // every command it carries must be committed
			early = append(early, fmt.Sprintf("command %d sent while the log was committed to %d", idx, commit))
		}
	}
	leader.raft.trans.sending.Store(&f)

	// Six writers at once, so that appends carry several commands and the
	// leader cuts them at the commit.
	const writers, each = 6, 10
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var cmds []string
	errs := make(chan error, writers)
	for w := range writers {
		mine := make([]string, each)
		for i := range mine {
			mine[i] = fmt.Sprintf("cmd-%d-%d", w, i)
		}
		cmds = append(cmds, mine...)
		go func() {
			for _, c := range mine {
				if _, err := leader.raft.Apply(ctx, []byte(c)); err != nil {
					errs <- fmt.Errorf("applying %s: %w", c, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	nv := memberByID(ms, nonvoters[0])
	eventually(t, 30*time.Second, "the non-voter applied every command", func() bool { return nv.fsm.has(cmds...) })
	leader.raft.trans.sending.Store(nil)

	mu.Lock()
	defer mu.Unlock()
	if toNonvoter == 0 || toVoters == 0 {
		t.Fatalf("saw %d appends with commands to the non-voter and %d to voters", toNonvoter, toVoters)
	}
	for _, e := range early {
		t.Error(e)
	}
	if n := leader.raft.hold.timedOut.Load(); n != 0 {
		t.Errorf("%d holds timed out", n)
	}
	t.Logf("%d appends with commands to the non-voter, %d held", toNonvoter, leader.raft.hold.held.Load())
}

// A quiet keeps what is committed after it began from the non-voters until
// it is released; what was committed before it goes at once.
func TestHoldbackQuietKeepsNewCommitsFromNonvoters(t *testing.T) {
	h, v := newTestHoldback(time.Hour, 4)
	release := h.quiet(time.Hour)
	if h.hold("nv", appendOf(3, entry(4, raft.LogCommand))) {
		t.Error("held a command committed before the quiet began")
	}
	args := appendOf(4, entry(5, raft.LogCommand), entry(6, raft.LogCommand))
	done := make(chan bool)
	go func() { done <- h.hold("nv", args) }()
	v.commit.Store(6)
	h.wake()
	select {
	case <-done:
		t.Fatal("sent commands committed during the quiet before its release")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("still held 10s after the quiet's release")
	}
	if got := entryIndexes(args); args.LeaderCommitIndex != 6 || !slices.Equal(got, []uint64{5, 6}) {
		t.Errorf("sent entries %v with commit index %d, want 5 and 6 with 6", got, args.LeaderCommitIndex)
	}
	release() // a second release ends nothing more
	if f := h.fence.Load(); f != 0 {
		t.Errorf("fence %d after the release, want none", f)
	}
}

// Quiets under way at once end with the last of them, and each ends by
// itself after its max.
func TestHoldbackQuietsNestAndEndAfterMax(t *testing.T) {
	h, v := newTestHoldback(time.Hour, 4)
	first := h.quiet(time.Hour)
	second := h.quiet(50 * time.Millisecond)
	v.commit.Store(5)
	first()
	if got := h.released(v); got != 4 {
		t.Fatalf("released up to %d with a quiet still under way, want 4", got)
	}
	eventually(t, 10*time.Second, "the second quiet to end after its max", func() bool { return h.released(v) == 5 })
	second() // after its max: changes nothing
	if f := h.fence.Load(); f != 0 {
		t.Errorf("fence %d after both ended, want none", f)
	}
}

// In a real group, a command committed while the leader is quiet reaches
// the non-voter only once the quiet is released.
func TestANonvoterHearsOfACommitAfterTheLeadersQuiet(t *testing.T) {
	ms, leader, nonvoters := groupWithANonvoter(t)
	nv := memberByID(ms, nonvoters[0])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	release := leader.raft.Quiet(time.Minute)
	if _, err := leader.raft.Apply(ctx, []byte("during the quiet")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * DefaultCommitTimeout) // the non-voter's appends keep coming meanwhile
	if nv.fsm.has("during the quiet") {
		t.Fatal("the non-voter applied a command committed during the leader's quiet")
	}
	release()
	eventually(t, 10*time.Second, "the non-voter applies the command after the quiet", func() bool { return nv.fsm.has("during the quiet") })
}
