package raftnet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// group starts n members: the first bootstraps, each other joins through the
// member started just before it (so most joins are forwarded to the leader).
func group(t testing.TB, n int, log func() *zap.Logger, tune func(*Config)) []*member {
	t.Helper()
	return groupVia(t, n, log, tune, func(ms []*member) *member { return ms[len(ms)-1] })
}

// groupVia is group with each newcomer joining through via(members so far).
func groupVia(t testing.TB, n int, log func() *zap.Logger, tune func(*Config), via func([]*member) *member, p2pTune ...func(*p2p.Config)) []*member {
	t.Helper()
	if tune == nil {
		tune = steady
	}
	first := startWith(t, t.TempDir(), secret(1), true, nil, log(), tune, p2pTune...)
	eventually(t, 10*time.Second, "first member leads", first.raft.IsLeader)
	ms := []*member{first}
	for len(ms) < n {
		addrs := via(ms).addrs()
		m := startWith(t, t.TempDir(), secret(1), false, addrs, log(), tune, p2pTune...)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := m.raft.Join(ctx, addrs)
		cancel()
		if err != nil {
			t.Fatalf("member %d joining: %v", len(ms), err)
		}
		ms = append(ms, m)
	}
	return ms
}

func testLogger(t *testing.T) func() *zap.Logger {
	return func() *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) }
}

// suffrage is how m's copy of the configuration splits into voters and
// non-voters.
func suffrage(m *member) (voters, nonvoters []string) {
	ms, err := m.raft.Membership()
	if err != nil {
		return nil, nil
	}
	for _, x := range ms {
		if x.Voter {
			voters = append(voters, x.ID.String())
		} else {
			nonvoters = append(nonvoters, x.ID.String())
		}
	}
	return voters, nonvoters
}

// waitSuffrage waits until every member of ms sees v voters and nv
// non-voters, all the same ones, and (if given) without the daemon notVoter
// among the voters.
func waitSuffrage(t testing.TB, ms []*member, v, nv int, notVoter ...string) (voters, nonvoters []string) {
	t.Helper()
	what := fmt.Sprintf("%d voters and %d non-voters on every member", v, nv)
	if len(notVoter) > 0 {
		what += fmt.Sprintf(", %s not a voter", notVoter)
	}
	eventually(t, 30*time.Second, what, func() bool {
		voters, nonvoters = suffrage(ms[0])
		if len(voters) != v || len(nonvoters) != nv {
			return false
		}
		for _, id := range notVoter {
			if slices.Contains(voters, id) {
				return false
			}
		}
		for _, m := range ms[1:] {
			mv, mn := suffrage(m)
			if !slices.Equal(mv, voters) || !slices.Equal(mn, nonvoters) {
				return false
			}
		}
		return true
	})
	return voters, nonvoters
}

func memberByID(ms []*member, id string) *member {
	for _, m := range ms {
		if m.node.ID().String() == id {
			return m
		}
	}
	return nil
}

func without(ms []*member, gone ...*member) []*member {
	return slices.DeleteFunc(slices.Clone(ms), func(m *member) bool { return slices.Contains(gone, m) })
}

// currentLeader is the member of ms that leads now, if any.
func currentLeader(ms []*member) *member {
	for _, m := range ms {
		if m.raft.IsLeader() {
			return m
		}
	}
	return nil
}

// healthOf is what the leader l (nil: none) reports of id.
func healthOf(l *member, id string) (Member, bool) {
	if l == nil {
		return Member{}, false
	}
	ms, err := l.raft.Membership()
	if err != nil {
		return Member{}, false
	}
	for _, x := range ms {
		if x.ID.String() == id {
			return x, true
		}
	}
	return Member{}, false
}

// applyVia applies cmd through m, trying again while the outcome is unknown
// because leadership moved mid-commit (loaded machine); the test commands
// are idempotent: only their presence is checked.
func applyVia(t *testing.T, m *member, cmd string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := m.raft.Apply(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || errors.Is(err, ErrRejected) {
			t.Fatalf("applying %q through %s: %v", cmd, m.node.ID(), err)
		}
		t.Logf("retrying %q: %v", cmd, err)
	}
}

func TestSevenDaemonsKeepFiveVotersAndAllApply(t *testing.T) {
	ms := group(t, 7, testLogger(t), nil)
	_, nonvoters := waitSuffrage(t, ms, 5, 2)
	eventually(t, 15*time.Second, "the leader reports both non-voters healthy", func() bool {
		l := currentLeader(ms)
		for _, id := range nonvoters {
			if h, _ := healthOf(l, id); h.Health != HealthHealthy {
				return false
			}
		}
		return true
	})
	// Every daemon applies, non-voters through the leader like followers.
	var cmds []string
	for i, m := range ms {
		cmd := fmt.Sprintf("from-%d", i)
		applyVia(t, m, cmd)
		cmds = append(cmds, cmd)
	}
	for i, m := range ms {
		eventually(t, 15*time.Second, fmt.Sprintf("member %d has every command", i), func() bool { return m.fsm.has(cmds...) })
	}
}

func TestMaxVotersThreeWithFourDaemons(t *testing.T) {
	ms := group(t, 4, testLogger(t), func(c *Config) { steady(c); c.MaxVoters = 3 })
	_, nonvoters := waitSuffrage(t, ms, 3, 1)
	nv := memberByID(ms, nonvoters[0])
	applyVia(t, nv, "via the non-voter")
	for _, m := range ms {
		eventually(t, 15*time.Second, "command on every member", func() bool { return m.fsm.has("via the non-voter") })
	}
}

// steady is a raft timing with fewer spurious elections than start's on a
// loaded machine, where seven daemons share two cores with other tests.
func steady(c *Config) {
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
}

// fastFailover replaces a voter silent for one second.
func fastFailover(c *Config) {
	steady(c)
	c.MaxVoters = 3
	c.VoterFailureTimeout = time.Second
}

func TestSilentVoterIsReplacedAndRejoinsAsNonvoter(t *testing.T) {
	ms := group(t, 5, testLogger(t), fastFailover)
	voters, _ := waitSuffrage(t, ms, 3, 2)
	leader := leaderOf(t, ms)
	var victim *member
	for _, id := range voters {
		if id != leader.node.ID().String() {
			victim = memberByID(ms, id)
			break
		}
	}
	victimID := victim.node.ID().String()
	victim.stop(t)
	rest := without(ms, victim)

	began := time.Now()
	newVoters, _ := waitSuffrage(t, rest, 3, 2, victimID)
	t.Logf("voter replaced %v after it stopped (VoterFailureTimeout 1s; an upper bound on a shared machine)", time.Since(began))
	eventually(t, 15*time.Second, "the leader sees every voter healthy after the replacement", func() bool {
		l := currentLeader(rest)
		for _, id := range newVoters {
			if h, _ := healthOf(l, id); h.Health != HealthHealthy {
				return false
			}
		}
		return true
	})
	applyVia(t, rest[0], "after the replacement")

	// The replaced daemon restarts from its folder: it is a non-voter now
	// and catches up with what it missed.
	back := start(t, victim.dir, secret(1), false, leaderOf(t, rest).addrs())
	all := append(rest, back)
	_, nonvoters := waitSuffrage(t, all, 3, 2)
	if !slices.Contains(nonvoters, victimID) {
		t.Fatalf("restarted daemon %s is not among the non-voters %v", victimID, nonvoters)
	}
	eventually(t, 15*time.Second, "restarted daemon catches up", func() bool { return back.fsm.has("after the replacement") })
	eventually(t, 15*time.Second, "leader sees the restarted daemon healthy", func() bool {
		h, ok := healthOf(currentLeader(all), victimID)
		return ok && h.Health == HealthHealthy
	})
	applyVia(t, back, "from the restarted non-voter")
	for _, m := range all {
		eventually(t, 15*time.Second, "command from the restarted daemon everywhere", func() bool { return m.fsm.has("from the restarted non-voter") })
	}
}

func TestNoReplacementWithoutHealthyNonvoter(t *testing.T) {
	ms := group(t, 4, testLogger(t), fastFailover)
	voters, nonvoters := waitSuffrage(t, ms, 3, 1)

	// The only non-voter goes first, then a voter.
	spare := memberByID(ms, nonvoters[0])
	spare.stop(t)
	eventually(t, 15*time.Second, "leader sees the non-voter down", func() bool {
		h, _ := healthOf(currentLeader(ms), nonvoters[0])
		return h.Health == HealthUnreachable
	})
	leader := leaderOf(t, without(ms, spare))
	var victim *member
	for _, id := range voters {
		if id != leader.node.ID().String() {
			victim = memberByID(ms, id)
			break
		}
	}
	victimID := victim.node.ID().String()
	victim.stop(t)
	rest := without(ms, spare, victim)
	// Leadership may move on a loaded machine; whoever leads must see the
	// voter silent past the failure timeout, then look three more times.
	var l *member
	eventually(t, 30*time.Second, "the leader sees the voter silent past the failure timeout", func() bool {
		l = currentLeader(rest)
		h, _ := healthOf(l, victimID)
		return h.Health == HealthUnreachable && h.OutOfContact > time.Second
	})
	seen := l.raft.passes.Load()
	eventually(t, 15*time.Second, "three more reconcile passes", func() bool { return l.raft.passes.Load() >= seen+3 })
	got, _ := suffrage(leaderOf(t, rest))
	if !slices.Equal(got, voters) {
		t.Fatalf("voters changed to %v without a healthy non-voter, want %v", got, voters)
	}
	applyVia(t, rest[0], "with two of three voters")
	for _, m := range rest {
		eventually(t, 15*time.Second, "command with two of three voters on both", func() bool { return m.fsm.has("with two of three voters") })
	}
}

// A member the group forgot hears from no leader again; RejoinSoon has it
// added back, after which it applies commands again. (The group forgets a
// newcomer when its addition, appended and already seen by the newcomer,
// is lost with the leader before it was committed; removing the member is
// the same state, made on purpose.)
func TestForgottenMemberRejoins(t *testing.T) {
	ms := group(t, 4, testLogger(t), nil)
	l := currentLeader(ms)
	var f *member
	for _, m := range ms {
		if m != l {
			f = m
			break
		}
	}
	fid := raft.ServerID(f.node.ID().String())
	if err := l.raft.R.RemoveServer(fid, 0, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the forgotten member hears from no leader", func() bool {
		_, ok := f.raft.Leader()
		return !ok
	})
	applyVia(t, l, "while forgotten")
	time.Sleep(2 * time.Second)
	if f.fsm.has("while forgotten") {
		t.Fatal("a member the group forgot applied a command: the test proves nothing")
	}

	f.raft.RejoinSoon()
	f.raft.RejoinSoon() // one request at a time: a no-op
	eventually(t, 20*time.Second, "the forgotten member is a member again", func() bool {
		servers, _, err := currentLeader(ms).raft.servers()
		if err != nil {
			return false
		}
		return slices.ContainsFunc(servers, func(s serverView) bool { return s.id == fid })
	})
	applyVia(t, currentLeader(ms), "after rejoining")
	eventually(t, 20*time.Second, "the member applies commands again", func() bool {
		return f.fsm.has("after rejoining")
	})
}
