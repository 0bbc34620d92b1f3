package raftnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// listFSM records applied commands; commands starting with "bad" are refused.
type listFSM struct {
	mu   sync.Mutex
	cmds []string
	// applied, when set, hears every accepted command (benchmarks).
	applied func(cmd string)
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.HasPrefix(string(l.Data), "bad") {
		return fmt.Errorf("refusing %q", l.Data)
	}
	f.cmds = append(f.cmds, string(l.Data))
	if f.applied != nil {
		f.applied(string(l.Data))
	}
	return map[string]int{"count": len(f.cmds)}
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.cmds)
	return snap(b), err
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cmds []string
	if err := json.NewDecoder(rc).Decode(&cmds); err != nil {
		return err
	}
	f.mu.Lock()
	f.cmds = cmds
	f.mu.Unlock()
	return nil
}

func (f *listFSM) setApplied(fn func(cmd string)) {
	f.mu.Lock()
	f.applied = fn
	f.mu.Unlock()
}

func (f *listFSM) has(cmds ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cmds {
		if !slices.Contains(f.cmds, c) {
			return false
		}
	}
	return true
}

type snap []byte

func (s snap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (s snap) Release() {}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// member is one daemon: a p2p node and its raft.
type member struct {
	dir  string
	node *p2p.Node
	raft *Raft
	fsm  *listFSM
}

func (m *member) stop(t testing.TB) {
	t.Helper()
	if err := m.raft.Shutdown(); err != nil {
		t.Errorf("raft shutdown: %v", err)
	}
	if err := m.raft.Shutdown(); err != nil {
		t.Errorf("second raft shutdown: %v", err)
	}
	if err := m.node.Close(); err != nil {
		t.Errorf("node close: %v", err)
	}
}

func (m *member) addrs() []string {
	var s []string
	for _, a := range m.node.Addrs() {
		s = append(s, a.String())
	}
	return s
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, p2p.SecretSize) }

// start runs a member from dir (identity and raft state live there).
func start(t testing.TB, dir string, sec []byte, bootstrap bool, peers []string) *member {
	t.Helper()
	return startWith(t, dir, sec, bootstrap, peers, zaptest.NewLogger(t), nil)
}

// startWith is start with a given logger and a chance to change the raft
// configuration (tune may be nil) and the swarm's.
func startWith(t testing.TB, dir string, sec []byte, bootstrap bool, peers []string, log *zap.Logger, tune func(*Config), p2pTune ...func(*p2p.Config)) *member {
	t.Helper()
	ctx := context.Background()
	pc := p2p.Config{
		IdentityFile: filepath.Join(dir, "identity.key"), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Secret: sec, Bootstrap: peers, Logger: log,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond, AdvertiseInterval: 200 * time.Millisecond,
	}
	for _, f := range p2pTune {
		f(&pc)
	}
	n, err := p2p.New(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	fsm := &listFSM{}
	cfg := Config{
		Dir: filepath.Join(dir, "raft"), Node: n, FSM: fsm, Logger: log, Bootstrap: bootstrap,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 10 * time.Millisecond,
		RequestTimeout: 3 * time.Second,
	}
	if tune != nil {
		tune(&cfg)
	}
	r, err := Start(ctx, cfg)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	m := &member{dir: dir, node: n, raft: r, fsm: fsm}
	t.Cleanup(func() {
		r.Shutdown()
		n.Close()
	})
	return m
}

// cluster starts three members: the first bootstraps, the others join it.
func cluster(t *testing.T) []*member {
	t.Helper()
	return clusterWith(t, nil)
}

// clusterWith is cluster with a change to every member's raft configuration.
func clusterWith(t *testing.T, tune func(*Config)) []*member {
	t.Helper()
	start := func(t testing.TB, dir string, sec []byte, bootstrap bool, peers []string) *member {
		return startWith(t, dir, sec, bootstrap, peers, zaptest.NewLogger(t), tune)
	}
	first := start(t, t.TempDir(), secret(1), true, nil)
	eventually(t, 10*time.Second, "first member leads", first.raft.IsLeader)
	ms := []*member{first}
	for range 2 {
		// The third member asks the second, a follower, which forwards the
		// request to the leader.
		via := ms[len(ms)-1].addrs()
		m := start(t, t.TempDir(), secret(1), false, via)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := m.raft.Join(ctx, via)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	for _, m := range ms {
		eventually(t, 10*time.Second, "all members see three voters", func() bool {
			return voterCount(m) == 3
		})
	}
	// The joiners only knew the first member; they learn each other through
	// the address advertisements, which failover needs.
	began := time.Now()
	eventually(t, 10*time.Second, "joiners connected to each other", func() bool {
		return ms[1].node.Host.Network().Connectedness(ms[2].node.ID()) == network.Connected
	})
	t.Logf("joiners connected after %v", time.Since(began))
	return ms
}

// voterCount is how many voters m's copy of the configuration has, -1 on error.
func voterCount(m *member) int {
	ms, err := m.raft.Membership()
	if err != nil {
		return -1
	}
	n := 0
	for _, x := range ms {
		if x.Voter {
			n++
		}
	}
	return n
}

func apply(t testing.TB, m *member, cmd string) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := m.raft.Apply(ctx, []byte(cmd))
	if err != nil {
		t.Fatalf("applying %q on %s: %v", cmd, m.node.ID(), err)
	}
	return out
}

// applyAfterFailover applies cmd through a follower of the current leader,
// retrying while leadership moves.
func applyAfterFailover(t *testing.T, ms []*member, cmd string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader := leaderOf(t, ms)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := followerOf(ms, leader).raft.Apply(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "leadership lost") {
			t.Fatalf("applying %q after the failover: %v", cmd, err)
		}
		t.Logf("retrying %q: %v", cmd, err)
	}
}

func leaderOf(t testing.TB, ms []*member) *member {
	t.Helper()
	var leader *member
	eventually(t, 10*time.Second, "a leader that all agree on", func() bool {
		leader = nil
		for _, m := range ms {
			if m.raft.IsLeader() {
				leader = m
			}
		}
		if leader == nil {
			return false
		}
		for _, m := range ms {
			if id, ok := m.raft.Leader(); !ok || id != leader.node.ID() {
				return false
			}
		}
		return true
	})
	return leader
}

func followerOf(ms []*member, leader *member) *member {
	for _, m := range ms {
		if m != leader {
			return m
		}
	}
	return nil
}

func TestFollowerApplyReachesAllAndSurvivesLeaderLoss(t *testing.T) {
	ms := cluster(t)
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)

	out := apply(t, follower, "one")
	if string(out) != `{"count":1}` {
		t.Fatalf("forwarded response %s, want {\"count\":1}", out)
	}
	for _, m := range ms {
		eventually(t, 10*time.Second, "command on every member", func() bool { return m.fsm.has("one") })
	}

	// The FSM's refusal reaches the caller, directly and forwarded.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []*member{leader, follower} {
		_, err := m.raft.Apply(ctx, []byte("bad one"))
		if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), `refusing "bad one"`) {
			t.Fatalf("on %s: got %v, want ErrRejected with the FSM's reason", m.node.ID(), err)
		}
	}

	// Kill the leader; the other two elect a new one that takes commands.
	leader.stop(t)
	rest := slices.DeleteFunc(slices.Clone(ms), func(m *member) bool { return m == leader })
	newLeader := leaderOf(t, rest)
	if newLeader == leader {
		t.Fatal("dead leader still leads")
	}
	// Right after a failover the new leader can lose its leadership again on
	// a loaded machine; Apply then reports an unknown outcome and the caller
	// retries, as the daemon's callers do. The test command is idempotent.
	applyAfterFailover(t, rest, "two")
	for _, m := range rest {
		eventually(t, 10*time.Second, "command after failover on both survivors", func() bool { return m.fsm.has("one", "two") })
	}
}

// A member learns that a command is committed, and applies it, when the
// leader tells it, which hashicorp/raft does only with its next append
// request: at the next entry or after CommitTimeout. With CommitTimeout far
// longer than the wait below, only the leader's flush gets the command
// applied on the followers in time.
func TestCommitsReachTheMembersWithoutWaitingForCommitTimeout(t *testing.T) {
	ms := clusterWith(t, func(c *Config) { c.CommitTimeout = time.Minute })
	leader := leaderOf(t, ms)
	for i, via := range []*member{leader, followerOf(ms, leader)} {
		cmd := fmt.Sprintf("cmd%d", i)
		began := time.Now()
		apply(t, via, cmd)
		for _, m := range ms {
			eventually(t, 5*time.Second, cmd+" applied on "+m.node.ID().String(), func() bool { return m.fsm.has(cmd) })
		}
		t.Logf("%s (applied through the %s) on every member after %v", cmd, map[bool]string{true: "leader", false: "follower"}[via == leader], time.Since(began))
	}
}

func TestRestartKeepsStateAndRejoinsWithoutJoin(t *testing.T) {
	ms := cluster(t)
	apply(t, ms[1], "before")
	restarted := ms[2]
	eventually(t, 10*time.Second, "member got the command", func() bool { return restarted.fsm.has("before") })
	id := restarted.node.ID()
	restarted.stop(t)

	apply(t, ms[0], "while down")
	m := start(t, restarted.dir, secret(1), false, ms[0].addrs())
	if m.node.ID() != id {
		t.Fatalf("restarted with identity %s, want %s", m.node.ID(), id)
	}
	eventually(t, 15*time.Second, "restarted member catches up", func() bool { return m.fsm.has("before", "while down") })

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := m.raft.Join(ctx, ms[0].addrs()); err != nil {
		t.Fatalf("Join of an existing member must be a no-op: %v", err)
	}
	apply(t, m, "after restart")
	eventually(t, 10*time.Second, "command from restarted member on the first", func() bool { return ms[0].fsm.has("after restart") })
	members, err := ms[0].raft.Members()
	if err != nil || len(members) != 3 {
		t.Fatalf("members %v (%v), want three", members, err)
	}
}

func TestForeignSecretCannotJoin(t *testing.T) {
	first := start(t, t.TempDir(), secret(1), true, nil)
	eventually(t, 10*time.Second, "first member leads", first.raft.IsLeader)
	stranger := start(t, t.TempDir(), secret(2), false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := stranger.raft.Join(ctx, first.addrs())
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("join from another network: got %v, want a timeout", err)
	}
	members, err := first.raft.Members()
	if err != nil || len(members) != 1 || members[0] != first.node.ID() {
		t.Fatalf("members %v (%v), want only the first", members, err)
	}
}

func TestApplyWithoutLeaderWaitsForContext(t *testing.T) {
	lonely := start(t, t.TempDir(), secret(1), false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := lonely.raft.Apply(ctx, []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if _, ok := lonely.raft.Leader(); ok {
		t.Fatal("a node that never joined reports a leader")
	}
	lonely.raft.Shutdown()
	if _, err := lonely.raft.Apply(context.Background(), []byte("x")); !errors.Is(err, ErrShutdown) {
		t.Fatalf("after shutdown: got %v, want ErrShutdown", err)
	}
}

func TestLeadershipChanges(t *testing.T) {
	m := start(t, t.TempDir(), secret(1), true, nil)
	select {
	case v := <-m.raft.LeadershipChanges():
		if !v {
			t.Fatal("first leadership change is not gaining leadership")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no leadership change reported")
	}
}

// A leader's forward check sees every command a follower forwards, with the
// follower's authenticated identity, and its refusal reaches the follower as
// ErrRejected with nothing applied; the leader's own commands are not checked.
func TestForwardCheckRefusesWhatTheSenderMayNotSay(t *testing.T) {
	ms := cluster(t)
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	var mu sync.Mutex
	var senders []peer.ID
	for _, m := range ms { // whichever becomes leader checks
		m.raft.CheckForwarded(func(from peer.ID, cmd []byte) error {
			mu.Lock()
			senders = append(senders, from)
			mu.Unlock()
			if want := "from " + from.String(); string(cmd) != want {
				return fmt.Errorf("%s may only say %q", from, want)
			}
			return nil
		})
	}
	own := "from " + follower.node.ID().String()
	apply(t, follower, own)
	forged := "from " + leader.node.ID().String()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := follower.raft.Apply(ctx, []byte(forged))
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("forwarding %q: %v, want ErrRejected", forged, err)
	}
	apply(t, leader, forged) // the leader's own command is not a forwarded one
	eventually(t, 10*time.Second, "both commands everywhere", func() bool {
		for _, m := range ms {
			if !m.fsm.has(own, forged) {
				return false
			}
		}
		return true
	})
	leader.fsm.mu.Lock()
	applied := slices.Clone(leader.fsm.cmds)
	leader.fsm.mu.Unlock()
	if len(applied) != 2 {
		t.Errorf("leader applied %q, want the two accepted commands only", applied)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(senders) != 2 || senders[0] != follower.node.ID() || senders[1] != follower.node.ID() {
		t.Errorf("check saw senders %v, want the follower twice", senders)
	}
}
