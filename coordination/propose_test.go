package coordination

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/coordination/raftnet"
)

// daemon is one daemon's coordination: a p2p node, its raft and its coordinator.
type daemon struct {
	node  *p2p.Node
	raft  *raftnet.Raft
	fsm   *plan.FSM
	coord *Coordinator
}

func (d *daemon) addrs() []string {
	var s []string
	for _, a := range d.node.Addrs() {
		s = append(s, a.String())
	}
	return s
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDaemons runs n daemons on 127.0.0.1 that trust operator: the first
// bootstraps the raft group, the others join it; all have registered their
// hosts when it returns.
func startDaemons(t *testing.T, n int, operator peer.ID) []*daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	secret := bytes.Repeat([]byte{7}, p2p.SecretSize)
	var ds []*daemon
	for i := range n {
		dir := t.TempDir()
		log := zaptest.NewLogger(t).Named(string(rune('a' + i)))
		var boot []string
		if i > 0 {
			boot = ds[0].addrs()
		}
		node, err := p2p.New(ctx, p2p.Config{IdentityFile: filepath.Join(dir, "identity.key"), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Secret: secret, Bootstrap: boot, Logger: log, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond,
			AdvertiseInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		fsm := plan.NewFSM(log)
		r, err := raftnet.Start(ctx, raftnet.Config{Dir: filepath.Join(dir, "raft"), Node: node, FSM: fsm, Logger: log, Bootstrap: i == 0,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, RequestTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		d := &daemon{node: node, raft: r, fsm: fsm}
		d.coord, err = New(Config{Node: node, Raft: r, FSM: fsm, Trusted: []peer.ID{operator}, Timeouts: plan.DefaultTimeouts(), Log: log,
			HostInfo: func(context.Context) (plan.Host, error) {
				return plan.Host{ID: node.ID().String(), ClusterPeer: "peer-" + node.ID().String(), Version: "1.0.8",
					Policy: plan.NewPolicy([]string{operator.String()}, 1)}, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		runDone := make(chan struct{})
		go func() {
			defer close(runDone)
			_ = d.coord.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-runDone
			_ = r.Shutdown()
			_ = node.Close()
		})
		if i == 0 {
			waitFor(t, 10*time.Second, "the first daemon leads", r.IsLeader)
		} else {
			jctx, jcancel := context.WithTimeout(ctx, 15*time.Second)
			err := r.Join(jctx, boot)
			jcancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		ds = append(ds, d)
	}
	for _, d := range ds {
		waitFor(t, 15*time.Second, "every host registered everywhere", func() bool {
			return len(d.fsm.State().Hosts) == n
		})
	}
	return ds
}

func sealed(t *testing.T, key crypto.PrivKey, version string) (*plan.Announcement, []byte) {
	t.Helper()
	a, err := NewAnnouncement(version, []plan.Artifact{{Source: "/tmp/x.tar.gz", SHA256: strings.Repeat("ab", 32)}}, plan.Standard, false, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	env, err := SealAnnouncement(key, a)
	if err != nil {
		t.Fatal(err)
	}
	return a, env
}

func leaderAndFollower(t *testing.T, ds []*daemon) (leader, follower *daemon) {
	t.Helper()
	waitFor(t, 10*time.Second, "a raft leader", func() bool {
		for _, d := range ds {
			if d.raft.IsLeader() {
				leader = d
				return true
			}
		}
		return false
	})
	for _, d := range ds {
		if d != leader {
			return leader, d
		}
	}
	t.Fatal("no follower")
	return nil, nil
}

// A follower hands the announcement to the leader and gets the committed
// plan back from it, without gossip: the follower's answer is the plan the
// leader committed, and a second announcing of the same envelope, straight
// to the leader, commits nothing more.
func TestAFollowerGetsTheCommittedPlanFromTheLeader(t *testing.T) {
	key, operator := newKey(t)
	ds := startDaemons(t, 3, operator)
	leader, follower := leaderAndFollower(t, ds)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	a, env := sealed(t, key, "1.1.6")
	got, out, err := follower.coord.Announce(ctx, env)
	if err != nil {
		t.Fatalf("announce at a follower: %v", err)
	}
	if out == nil {
		t.Fatal("the follower published the announcement instead of handing it to the leader")
	}
	if got.ID != a.ID || out.Plan == nil || out.Plan.ID != a.ID || out.Rejected != "" {
		t.Fatalf("outcome %+v for %s, want its plan", out, a.ID)
	}
	if len(out.Plan.Hosts) != 3 || out.Plan.Phase != plan.PhasePreparing {
		t.Fatalf("plan %s has %d hosts in phase %s, want 3 preparing", out.Plan.ID, len(out.Plan.Hosts), out.Plan.Phase)
	}
	if p := leader.fsm.Plan(a.ID); p == nil || !p.Created.Equal(out.Plan.Created) {
		t.Fatalf("the leader's plan state does not hold the plan it answered (created %s)", out.Plan.Created)
	}

	// The same envelope again, straight to the leader: the answer is the plan
	// already committed, marked as seen before (the announcing daemon refuses
	// it as a replay even if its own copy of the log does not hold the plan).
	ans, err := askPropose(ctx, follower.node.Host, leader.node.ID(), env)
	if err != nil || ans.Error != "" || ans.Plan == nil || !ans.Plan.Created.Equal(out.Plan.Created) || !ans.Seen {
		t.Fatalf("second proposal of %s: error %q, seen %v, %v; want the committed plan, seen", a.ID, ans.Error, ans.Seen, err)
	}
	waitFor(t, 10*time.Second, "the follower's copy of the plan", func() bool { return follower.fsm.Plan(a.ID) != nil })
	if _, _, err := follower.coord.Announce(ctx, env); !errors.Is(err, plan.ErrReplayed) {
		t.Fatalf("announcing %s again: %v, want a replay refusal", a.ID, err)
	}
}

// Only a valid announcement, sent to the leader, is proposed: a forged one
// and one sent to a follower get an error and leave the plan state as it was.
func TestTheLeaderProposesOnlyValidAnnouncements(t *testing.T) {
	key, operator := newKey(t)
	ds := startDaemons(t, 2, operator)
	leader, follower := leaderAndFollower(t, ds)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	stranger, _ := newKey(t)
	_, forged := sealed(t, stranger, "1.1.6")
	ans, err := askPropose(ctx, follower.node.Host, leader.node.ID(), forged)
	if err != nil || !strings.Contains(ans.Error, "not trusted") || ans.Plan != nil {
		t.Fatalf("forged announcement: error %q, %v; want a trust error", ans.Error, err)
	}
	_, good := sealed(t, key, "1.1.6")
	ans, err = askPropose(ctx, leader.node.Host, follower.node.ID(), good)
	if err != nil || !strings.Contains(ans.Error, "not the raft leader") || ans.Plan != nil {
		t.Fatalf("announcement sent to a follower: error %q, %v; want a not-leader error", ans.Error, err)
	}
	for _, d := range ds {
		if st := d.fsm.State(); len(st.Plans) != 0 || len(st.Rejected) != 0 {
			t.Fatalf("plan state changed: %d plans, %d refusals", len(st.Plans), len(st.Rejected))
		}
	}
}

// With no leader to hand it to, the announcement goes out by gossip, and the
// next leader proposes it from there.
func TestWithoutALeaderTheAnnouncementIsPublished(t *testing.T) {
	key, operator := newKey(t)
	ds := startDaemons(t, 2, operator)
	_, follower := leaderAndFollower(t, ds)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	follower.coord.leader = func() (peer.ID, bool) { return "", false }

	a, env := sealed(t, key, "1.1.6")
	if _, out, err := follower.coord.Announce(ctx, env); err != nil || out != nil {
		t.Fatalf("announce without a leader: outcome %+v, %v; want it published", out, err)
	}
	waitFor(t, 10*time.Second, "the plan proposed from gossip", func() bool { return follower.fsm.Plan(a.ID) != nil })
}

// A leader whose answer holds neither a plan nor a refusal (it lost its
// leadership while committing) is not taken at its word: the announcement
// is published, and the plan comes from gossip.
func TestAnAnswerWithoutOutcomeIsNotTakenForOne(t *testing.T) {
	key, operator := newKey(t)
	ds := startDaemons(t, 3, operator)
	leader, follower := leaderAndFollower(t, ds)
	var mute *daemon
	for _, d := range ds {
		if d != leader && d != follower {
			mute = d
		}
	}
	mute.node.Host.SetStreamHandler(proposeProtocol, func(st network.Stream) {
		defer st.Close()
		if _, err := readEnvelope(bufio.NewReader(st)); err != nil {
			_ = st.Reset()
			return
		}
		_, _ = st.Write([]byte("{}\n"))
	})
	follower.coord.leader = func() (peer.ID, bool) { return mute.node.ID(), true }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	a, env := sealed(t, key, "1.1.6")
	if _, out, err := follower.coord.Announce(ctx, env); err != nil || out != nil {
		t.Fatalf("announce answered without outcome: outcome %+v, %v; want it published", out, err)
	}
	waitFor(t, 10*time.Second, "the plan proposed from gossip", func() bool { return follower.fsm.Plan(a.ID) != nil })
}

// A second proposal of an announcement waits for the first to end, and
// gives up with its context.
func TestOneProposalOfAnAnnouncementAtATime(t *testing.T) {
	var f inFlight
	ctx := context.Background()
	release, err := f.start(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.start(ctx, "b") // another announcement does not wait
	if err != nil {
		t.Fatal(err)
	}
	other()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := f.start(short, "a"); err == nil {
		t.Fatal("a second proposal of a started while the first was under way")
	}
	got := make(chan error, 1)
	go func() {
		r, err := f.start(ctx, "a")
		if err == nil {
			r()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the second proposal did not wait for the first: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second proposal still waits after the first ended")
	}
}
