package coordination

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/coordination/raftnet"
)

// holdsProtocol asks a daemon whether its copy of the plan state holds a
// plan at its switch (or later). The leader asks every daemon of a standard
// plan that is arming (plan.Plan.Arming) before it sets the switch time: a
// daemon whose raft log lags would otherwise learn the time after it passed.
const holdsProtocol = "/upgraded/holds/1.0.0"

// Arming's pace on the leader: how often the daemons that did not hold the
// switch yet are asked again, and how long one question may take.
const (
	armAskEvery   = 500 * time.Millisecond
	armAskTimeout = 2 * time.Second
)

// serveHolds answers holdsProtocol from fsm.
func serveHolds(h host.Host, fsm *plan.FSM) *p2p.Service {
	return p2p.ServeProtocol(h, holdsProtocol, func(_ context.Context, st network.Stream) {
		defer st.Close()
		_ = st.SetDeadline(time.Now().Add(armAskTimeout))
		line, err := bufio.NewReader(io.LimitReader(st, 128)).ReadString('\n')
		if err != nil {
			_ = st.Reset()
			return
		}
		answer := "0\n"
		if holdsSwitch(fsm, strings.TrimSpace(line)) {
			answer = "1\n"
		}
		_, _ = st.Write([]byte(answer))
	})
}

// holdsSwitch reports whether fsm holds plan id at its switch or past it.
func holdsSwitch(fsm *plan.FSM, id string) bool {
	held := false
	fsm.View(func(s *plan.State) {
		if p, ok := s.Plans[id]; ok {
			held = p.Phase == plan.PhaseSwitching || p.Phase == plan.PhaseRollingBack || p.Phase.Terminal()
		}
	})
	return held
}

// askHolds asks the daemon to whether it holds plan planID at its switch.
func askHolds(ctx context.Context, h host.Host, to peer.ID, planID string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, armAskTimeout)
	defer cancel()
	st, err := h.NewStream(network.WithAllowLimitedConn(ctx, "arming"), to, holdsProtocol)
	if err != nil {
		return false, err
	}
	defer st.Close()
	deadline, _ := ctx.Deadline()
	_ = st.SetDeadline(deadline)
	if _, err := st.Write([]byte(planID + "\n")); err != nil {
		_ = st.Reset()
		return false, err
	}
	_ = st.CloseWrite()
	b := make([]byte, 2)
	if _, err := io.ReadFull(st, b); err != nil {
		_ = st.Reset()
		return false, err
	}
	return b[0] == '1', nil
}

// arming is the leader's memory of the plan it arms: which daemons hold it.
type arming struct {
	plan  string
	ready map[string]bool
	asked time.Time
}

// armSwitch, on the leader, sets the switch time of the standard plan that
// is arming once every daemon of the plan holds it, or once the plan's
// ArmWait has passed (naming the daemons that did not: they stop late).
func (c *Coordinator) armSwitch(ctx context.Context) {
	var (
		id    string
		hosts []string
		since time.Time
		wait  time.Duration
	)
	c.cfg.FSM.View(func(s *plan.State) {
		if p := s.CurrentPlan(); p != nil && p.Arming() && !p.Paused {
			id, hosts, since, wait = p.ID, p.HostIDs(), p.Since, p.ArmWait()
		}
	})
	if id == "" {
		c.arm = arming{}
		return
	}
	if c.arm.plan != id {
		c.arm = arming{plan: id, ready: map[string]bool{c.self: true}} // this daemon holds it: it just read it
	}
	now := c.cfg.Clock()
	if now.Sub(c.arm.asked) < armAskEvery {
		return
	}
	c.arm.asked = now
	var ask []string
	for _, h := range hosts {
		if !c.arm.ready[h] {
			ask = append(ask, h)
		}
	}
	held := make([]bool, len(ask))
	var wg sync.WaitGroup
	for i, h := range ask {
		wg.Add(1)
		go func() {
			defer wg.Done()
			held[i] = c.holds(ctx, h, id)
		}()
	}
	wg.Wait()
	for i, h := range ask {
		if held[i] {
			c.arm.ready[h] = true
		}
	}
	var missing []string
	for _, h := range hosts {
		if !c.arm.ready[h] {
			missing = append(missing, h)
		}
	}
	waited := c.cfg.Clock().Sub(since)
	if len(missing) > 0 && waited < wait {
		return
	}
	cmd := plan.Command{Op: plan.OpArm, PlanID: id}
	if len(missing) > 0 {
		cmd.Reason = fmt.Sprintf("switch time set after %s without %s, whose daemons did not hold the plan yet: they stop late",
			wait.Round(time.Second), describeHosts(missing))
		c.log.Warn("setting the switch time without every daemon holding the plan", zap.String("plan", id),
			zap.Int("missing", len(missing)), zap.Strings("hosts", shortIDs(missing)), zap.Duration("waited", waited))
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.applyCmd(actx, cmd); err != nil {
		lvl := zap.WarnLevel
		if errors.Is(err, raftnet.ErrRejected) {
			lvl = zap.DebugLevel // armed meanwhile (by a new leader, say)
		}
		c.log.Log(lvl, "setting the switch time", zap.String("plan", id), zap.Error(err))
		return
	}
	c.log.Info("every daemon holds the switch: its time is set", zap.String("plan", id),
		zap.Int("hosts", len(hosts)-len(missing)), zap.Duration("after", waited.Round(time.Millisecond)))
}

// holdsByP2P asks host (a daemon's peer ID) over libp2p; any failure is "not yet".
func (c *Coordinator) holdsByP2P(ctx context.Context, h, planID string) bool {
	id, err := peer.Decode(h)
	if err != nil {
		return false
	}
	ok, err := askHolds(ctx, c.cfg.Node.Host, id, planID)
	if err != nil {
		c.log.Debug("asking a daemon whether it holds the switch", zap.String("host", plan.ShortID(h)), zap.Error(err))
	}
	return ok
}

func describeHosts(ids []string) string {
	const show = 5
	short := shortIDs(ids)
	if len(short) <= show {
		return strings.Join(short, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(short[:show], ", "), len(short)-show)
}

func shortIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = plan.ShortID(id)
	}
	return out
}
