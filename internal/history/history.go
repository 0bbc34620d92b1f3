// Package history keeps, on every daemon, the record of every plan: who
// signed it, each phase, each host's steps and each approval, with times
// and outcomes, as JSON lines in the config folder (history.jsonl). The
// times are the raft log's, so every daemon writes the same story.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
)

// Event is one line of the history.
type Event struct {
	At      time.Time `json:"at"`
	Plan    string    `json:"plan"`
	Kind    string    `json:"kind"` // "plan", "host" or "approval"
	Version string    `json:"version,omitempty"`
	Signer  string    `json:"signer,omitempty"`
	Host    string    `json:"host,omitempty"`
	State   string    `json:"state"` // the plan's phase, the host's step, or the approver
	Detail  string    `json:"detail,omitempty"`
}

// eventKey tells events apart; a struct, not a formatted string, since every
// applied command looks up each event of its plan.
type eventKey struct {
	plan, kind, host, state string
	at                      int64
}

func (e Event) key() eventKey {
	return eventKey{plan: e.Plan, kind: e.Kind, host: e.Host, state: e.State, at: e.At.UnixNano()}
}

// Recorder appends new events as the plan state changes. Replaying the raft
// log after a restart records nothing twice.
type Recorder struct {
	path string
	mu   sync.Mutex
	seen map[eventKey]bool

	// marks holds, for plan markPlan, each host's step and its start as last
	// looked at: a report changes one host, and the others' events need not
	// be built and looked up again (at 50 hosts that was 10% of the daemons'
	// CPU in the outage).
	markPlan string
	marks    map[string]hostMark
}

type hostMark struct {
	step plan.Step
	at   time.Time
}

// Open reads the existing history (to know what is recorded already).
func Open(path string) (*Recorder, error) {
	r := &Recorder{path: path, seen: map[eventKey]bool{}}
	events, err := Read(path)
	if err != nil {
		return nil, err
	}
	for _, e := range events {
		r.seen[e.key()] = true
	}
	return r, nil
}

// Read returns every event of the history file at path (none when absent).
// A torn last line is skipped.
func Read(path string) ([]Event, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading history: %w", err)
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// Events lists what the state says happened, in time order.
func Events(st *plan.State) []Event {
	var out []Event
	for _, p := range st.Plans {
		out = append(out, planEvents(p, nil)...)
	}
	slices.SortStableFunc(out, byTime)
	return out
}

func byTime(a, b Event) int { return a.At.Compare(b.At) }

// planEvents lists what the state says happened in plan p, unordered: of
// the hosts, those that look (nil: all of them).
func planEvents(p *plan.Plan, look func(id string, h *plan.HostProgress) bool) []Event {
	n := 2 + len(p.Approvals)
	if look == nil {
		n += len(p.Hosts)
	}
	out := make([]Event, 0, n)
	out = append(out, Event{At: p.Created, Plan: p.ID, Kind: "plan", Version: p.Version, Signer: p.Signer,
		State: "announced", Detail: fmt.Sprintf("%s upgrade of %d hosts to %s", p.Procedure, len(p.Hosts), p.Version)})
	if p.Phase != plan.PhasePreparing && p.Phase != plan.PhaseProposed {
		detail := p.Reason
		if p.Control != "" {
			detail += " (" + p.Control + ")"
		}
		out = append(out, Event{At: p.Since, Plan: p.ID, Kind: "plan", Version: p.Version, State: string(p.Phase), Detail: detail})
	}
	for id, ap := range p.Approvals {
		out = append(out, Event{At: ap.At, Plan: p.ID, Kind: "approval", Signer: id, State: "signed"})
	}
	for id, h := range p.Hosts {
		if look != nil && !look(id, h) {
			continue
		}
		detail := h.Detail
		if h.Error != "" && (h.Step == plan.StepFailed || h.Step == plan.StepRollbackErr || h.Step == plan.StepLeftOut) {
			detail = h.Error
		}
		out = append(out, Event{At: h.StepStarted, Plan: p.ID, Kind: "host", Host: id, Version: h.Version, State: string(h.Step), Detail: detail})
	}
	return out
}

// Observe records what is new in the state since the last call. changed is
// the plan the last command named: only its events can be new (a command
// changes no other plan; a refused announcement names no plan of the state);
// "" looks at every plan.
func (r *Recorder) Observe(st *plan.State, changed string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var events []Event
	if changed == "" {
		events = Events(st)
	} else if p, ok := st.Plans[changed]; ok {
		events = r.changedEvents(p) // unordered: only the new ones are sorted below
	}
	var fresh []Event
	for _, e := range events {
		if e.At.IsZero() || r.seen[e.key()] {
			continue
		}
		r.seen[e.key()] = true
		fresh = append(fresh, e)
	}
	if len(fresh) == 0 {
		return nil
	}
	slices.SortStableFunc(fresh, byTime)
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening history: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, e := range fresh {
		b, _ := json.Marshal(e)
		w.Write(append(b, '\n'))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing history: %w", err)
	}
	return f.Close()
}

// changedEvents is planEvents without the hosts whose step and its start are
// as changedEvents last saw them. Called with r.mu held.
func (r *Recorder) changedEvents(p *plan.Plan) []Event {
	if r.markPlan != p.ID || r.marks == nil {
		r.markPlan, r.marks = p.ID, make(map[string]hostMark, len(p.Hosts))
	}
	return planEvents(p, func(id string, h *plan.HostProgress) bool {
		m := hostMark{step: h.Step, at: h.StepStarted}
		if old, ok := r.marks[id]; ok && old.step == m.step && old.at.Equal(m.at) {
			return false
		}
		r.marks[id] = m
		return true
	})
}
