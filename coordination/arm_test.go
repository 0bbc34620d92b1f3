package coordination

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/upgraded/upgraded/coordination/plan"
)

// applyTo applies commands to f as raft would, with the log time at.
func applyTo(t *testing.T, f *plan.FSM, at time.Time, cmds ...plan.Command) {
	t.Helper()
	for _, c := range cmds {
		if res := f.Apply(&raft.Log{Index: uint64(time.Now().UnixNano()), Data: c.Encode(), AppendedAt: at}); res != nil {
			t.Fatalf("%s: %v", c.Op, res)
		}
	}
}

// prepared is the progress command of host i of plan "p" being prepared.
func prepared(i int) plan.Command {
	return plan.Command{Op: plan.OpProgress, PlanID: "p", HostID: fmt.Sprintf("h%d", i),
		Progress: &plan.HostProgress{Step: plan.StepPrepared}}
}

// A daemon answers, over libp2p, whether its plan state holds a plan at its
// switch: not while the plan prepares, yes once it is arming, no for a plan
// it does not know.
func TestDaemonsSayWhetherTheyHoldTheSwitch(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	fsm := fsmWithPlan(t, 10, now)
	server, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	svc := serveHolds(server, fsm)
	defer svc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	ask := func(planID string) bool {
		t.Helper()
		ok, err := askHolds(ctx, client, server.ID(), planID)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if ask("p") {
		t.Fatal("a daemon whose plan is preparing says it holds the switch")
	}
	for i := range 10 {
		applyTo(t, fsm, now, prepared(i))
	}
	if !ask("p") {
		t.Fatal("a daemon whose plan is arming says it does not hold the switch")
	}
	if ask("another") {
		t.Fatal("a daemon says it holds the switch of a plan it does not know")
	}
}

// armer is a leader's Coordinator over fsm whose questions and commands are
// the test's: daemons in lagging do not hold the switch.
type armer struct {
	*Coordinator
	mu      sync.Mutex
	lagging map[string]bool
	asked   []string
	armed   []plan.Command
}

func newArmer(t *testing.T, fsm *plan.FSM, clock func() time.Time, log *zap.Logger) *armer {
	a := &armer{lagging: map[string]bool{}}
	a.Coordinator = &Coordinator{log: log, self: "h0", cfg: Config{FSM: fsm, Clock: clock}}
	a.holds = func(_ context.Context, h, planID string) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.asked = append(a.asked, h)
		return planID == "p" && !a.lagging[h]
	}
	a.applyCmd = func(_ context.Context, cmd plan.Command) error {
		a.armed = append(a.armed, cmd)
		applyTo(t, fsm, clock(), cmd)
		return nil
	}
	return a
}

// The leader sets a standard plan's switch time only once every daemon holds
// the plan, asking again those that did not; it does not ask itself.
func TestSwitchTimeIsSetOnceEveryDaemonHoldsThePlan(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	fsm := fsmWithPlan(t, 10, now)
	a := newArmer(t, fsm, func() time.Time { return now }, zap.NewNop())
	a.armSwitch(context.Background())
	if len(a.asked) != 0 || len(a.armed) != 0 {
		t.Fatalf("a preparing plan: asked %v, armed %v", a.asked, a.armed)
	}
	for i := range 10 {
		applyTo(t, fsm, now, prepared(i))
	}
	a.lagging["h3"], a.lagging["h7"] = true, true
	a.armSwitch(context.Background())
	if len(a.asked) != 9 || len(a.armed) != 0 {
		t.Fatalf("two daemons lagging: asked %d (want the 9 others than itself), armed %v", len(a.asked), a.armed)
	}
	for _, h := range a.asked {
		if h == "h0" {
			t.Fatal("the leader asked itself")
		}
	}
	now = now.Add(armAskEvery)
	a.asked, a.lagging["h3"] = nil, false
	a.armSwitch(context.Background())
	if strings.Join(a.asked, ",") != "h3,h7" && strings.Join(a.asked, ",") != "h7,h3" || len(a.armed) != 0 {
		t.Fatalf("asked again %v (want the two lagging), armed %v", a.asked, a.armed)
	}
	now = now.Add(armAskEvery)
	a.lagging["h7"] = false
	a.armSwitch(context.Background())
	p := fsm.Plan("p")
	if len(a.armed) != 1 || p.Arming() || !p.SwitchAt.Equal(now.Add(p.Timeouts.Barrier)) || p.Reason != "" {
		t.Fatalf("every daemon holds it: armed %v, switch at %s (reason %q)", a.armed, p.SwitchAt, p.Reason)
	}
	a.armSwitch(context.Background())
	if len(a.armed) != 1 {
		t.Fatalf("armed again: %v", a.armed)
	}
}

// A daemon that never holds the plan (down, say) does not hold it forever:
// after the plan's ArmWait the leader sets the time and says who will be late.
func TestSwitchTimeIsSetAfterArmWaitWithoutALaggard(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	fsm := fsmWithPlan(t, 10, now)
	for i := range 10 {
		applyTo(t, fsm, now, prepared(i))
	}
	core, logs := observer.New(zapcore.WarnLevel)
	a := newArmer(t, fsm, func() time.Time { return now }, zap.New(core))
	a.lagging["h5"] = true
	wait := fsm.Plan("p").ArmWait()
	for now.Sub(fsm.Plan("p").Since) < wait {
		a.armSwitch(context.Background())
		if len(a.armed) != 0 {
			t.Fatalf("armed %s after the switch began, before ArmWait (%s)", now.Sub(fsm.Plan("p").Since), wait)
		}
		now = now.Add(10 * time.Second)
	}
	a.armSwitch(context.Background())
	p := fsm.Plan("p")
	if len(a.armed) != 1 || p.Arming() || !strings.Contains(p.Reason, "h5") {
		t.Fatalf("after ArmWait: armed %v, reason %q", a.armed, p.Reason)
	}
	if logs.FilterMessage("setting the switch time without every daemon holding the plan").Len() != 1 {
		t.Fatalf("no warning naming the late host: %v", logs.All())
	}
}
