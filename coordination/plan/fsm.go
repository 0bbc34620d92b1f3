package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// FSM adapts State to hashicorp/raft and tells watchers when it changed.
type FSM struct {
	log *zap.Logger

	mu    sync.RWMutex
	state *State
	index uint64

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}

	observer func(s *State, plan string) // called after every applied command, see Observe
}

// Observe registers fn to see the state after every applied command that
// names a plan (not coalesced, unlike Subscribe), and after a snapshot
// replaced the state, under the FSM's lock: fn must be quick and must not
// keep the state. plan is the plan the command named, the only one it can
// have changed; "" after a snapshot, when any may have. Commands that name no
// plan (a host's registration) change none and are not observed. Set it
// before raft starts.
func (f *FSM) Observe(fn func(s *State, plan string)) { f.observer = fn }

// NewFSM returns an FSM holding an empty state.
func NewFSM(log *zap.Logger) *FSM {
	return &FSM{log: log.Named("fsm"), state: NewState(), subs: map[chan struct{}]struct{}{}}
}

// Apply implements raft.FSM. It returns nil or the error refusing the command.
func (f *FSM) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		f.log.Error("ignoring undecodable command in the raft log", zap.Uint64("index", l.Index), zap.Error(err))
		return fmt.Errorf("decoding command: %w", err)
	}
	f.mu.Lock()
	err := f.state.Apply(c, l.AppendedAt)
	f.index = l.Index
	if p := planOf(c); f.observer != nil && err == nil && p != "" {
		f.observer(f.state, p)
	}
	f.mu.Unlock()
	if err != nil {
		f.log.Debug("command refused", zap.String("op", string(c.Op)), zap.String("plan", planOf(c)), zap.Error(err))
	}
	f.notify()
	return err
}

func planOf(c Command) string {
	if c.PlanID != "" {
		return c.PlanID
	}
	if c.Announcement != nil {
		return c.Announcement.ID
	}
	return ""
}

// Snapshot implements raft.FSM.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.state)
	if err != nil {
		return nil, fmt.Errorf("encoding plan state snapshot: %w", err)
	}
	return snapshot(b), nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st := NewState()
	if err := json.NewDecoder(rc).Decode(st); err != nil {
		return fmt.Errorf("decoding plan state snapshot: %w", err)
	}
	if st.Hosts == nil {
		st.Hosts = map[string]*Host{}
	}
	if st.Plans == nil {
		st.Plans = map[string]*Plan{}
	}
	if st.Rejected == nil {
		st.Rejected = map[string]Rejection{}
	}
	if st.Failed == nil {
		st.Failed = map[string]string{}
	}
	f.mu.Lock()
	f.state = st
	if f.observer != nil {
		f.observer(f.state, "")
	}
	f.mu.Unlock()
	f.notify()
	return nil
}

// View runs fn with the state read-locked; fn must not keep references to it.
func (f *FSM) View(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// State returns a deep copy of the state.
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Plan returns a copy of the plan with that id, or nil.
func (f *FSM) Plan(id string) *Plan {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if p, ok := f.state.Plans[id]; ok {
		return p.Clone()
	}
	return nil
}

// Holds reports whether the state holds announcement id, as a plan or as a
// refusal: sent again, it is a replay.
func (f *FSM) Holds(id string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, p := f.state.Plans[id]
	_, r := f.state.Rejected[id]
	return p || r
}

// Outcome returns what the state holds of announcement id: a copy of its
// plan, the reason it was refused, or neither.
func (f *FSM) Outcome(id string) (p *Plan, rejected string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if x, ok := f.state.Plans[id]; ok {
		p = x.Clone()
	}
	if r, ok := f.state.Rejected[id]; ok {
		rejected = r.Reason
	}
	return p, rejected
}

// Latest returns a copy of the plan in progress or, when none is, of the most
// recent plan; nil when there has been none. It copies that one plan only:
// the agent asks every second, and copying the whole state (every host and
// every past plan) each time was a large part of an idle daemon's work.
func (f *FSM) Latest() *Plan {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := f.state.CurrentPlan()
	if p == nil && f.state.Last != "" {
		p = f.state.Plans[f.state.Last]
	}
	if p == nil {
		return nil
	}
	return p.Clone()
}

// Subscribe returns a channel that receives (coalesced) after every change, and a cancel func.
func (f *FSM) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.subMu.Lock()
	f.subs[ch] = struct{}{}
	f.subMu.Unlock()
	return ch, func() {
		f.subMu.Lock()
		delete(f.subs, ch)
		f.subMu.Unlock()
	}
}

func (f *FSM) notify() {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing plan state snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}
