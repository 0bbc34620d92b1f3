package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
)

func TestDecide(t *testing.T) {
	journal := func(steps ...string) *Entries {
		e := &Entries{begun: map[string]bool{}, done: map[string]bool{}, data: map[string]map[string]string{}}
		for _, s := range steps {
			e.begun[s], e.done[s] = true, true
		}
		return e
	}
	cases := []struct {
		name  string
		phase plan.Phase
		step  plan.Step
		j     *Entries
		want  action
	}{
		{"proposed, waiting for approvals -> nothing", plan.PhaseProposed, plan.StepPending, journal(), actNone},
		{"fresh plan -> prepare", plan.PhasePreparing, plan.StepPending, journal(), actPrepare},
		{"restart mid-prepare -> prepare again", plan.PhasePreparing, plan.StepPreparing, journal(), actPrepare},
		{"prepared, others not yet -> wait", plan.PhasePreparing, plan.StepPrepared, journal(jPrepare), actNone},
		{"switch ordered -> switch", plan.PhaseSwitching, plan.StepPrepared, journal(jPrepare), actSwitch},
		{"restart mid-switch -> resume", plan.PhaseSwitching, plan.StepSwapping, journal(jPrepare, jStop), actSwitch},
		{"verified -> wait for the others", plan.PhaseSwitching, plan.StepVerified, journal(), actNone},
		{"failed -> wait for the rollback order", plan.PhaseSwitching, plan.StepFailed, journal(), actNone},
		{"rollback ordered", plan.PhaseRollingBack, plan.StepVerified, journal(), actRollback},
		{"rollback of a host that failed", plan.PhaseRollingBack, plan.StepFailed, journal(), actRollback},
		{"rolled back -> wait", plan.PhaseRollingBack, plan.StepRolledBack, journal(), actNone},
		{"ended -> clean up once", plan.PhaseDone, plan.StepVerified, journal(), actCleanup},
		{"ended and cleaned -> nothing", plan.PhaseDone, plan.StepVerified, journal(jCleanup), actNone},
		{"failed plan -> clean up", plan.PhaseFailed, plan.StepPrepared, journal(), actCleanup},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &plan.Plan{Phase: tc.phase, Hosts: map[string]*plan.HostProgress{"me": {Step: tc.step}}}
			if got := decide(p, "me", tc.j); got != tc.want {
				t.Fatalf("decide = %s, want %s", got, tc.want)
			}
			if got := decide(p, "someone-else", tc.j); got != actNone {
				t.Fatalf("a host outside the plan must do nothing, got %s", got)
			}
		})
	}
	// A standard plan whose switch time is not set yet (arming): prepared
	// hosts wait; once it is set they switch.
	armed := &plan.Plan{Phase: plan.PhaseSwitching, Hosts: map[string]*plan.HostProgress{"me": {Step: plan.StepPrepared}}}
	armed.Procedure = plan.Standard
	if got := decide(armed, "me", journal(jPrepare)); got != actNone {
		t.Fatalf("arming standard plan: decide = %s, want nothing until the switch time is set", got)
	}
	armed.SwitchAt = time.Now()
	if got := decide(armed, "me", journal(jPrepare)); got != actSwitch {
		t.Fatalf("armed standard plan: decide = %s, want switch", got)
	}
	boot := []struct {
		name string
		task plan.Task
		step plan.Step
		want action
	}{
		{"no task yet", "", plan.StepPrepared, actNone},
		{"asked to leave", plan.TaskRemove, plan.StepPrepared, actRemove},
		{"resume a removal", plan.TaskRemove, plan.StepRemoving, actRemove},
		{"removed, waiting", plan.TaskRemove, plan.StepRemoved, actNone},
		{"survivor upgrades alone", plan.TaskUpgrade, plan.StepPrepared, actSwitch},
		{"asked to rejoin", plan.TaskRejoin, plan.StepRemoved, actRejoin},
		{"left out stays out", plan.TaskRejoin, plan.StepLeftOut, actNone},
	}
	for _, tc := range boot {
		p := &plan.Plan{Phase: plan.PhaseSwitching, Announcement: plan.Announcement{Procedure: plan.Bootstrap},
			Survivor: "s", Tasks: map[string]plan.Task{"me": tc.task}, Hosts: map[string]*plan.HostProgress{"me": {Step: tc.step}}}
		if got := decide(p, "me", journal()); got != tc.want {
			t.Errorf("bootstrap, %s: decide = %s, want %s", tc.name, got, tc.want)
		}
	}
	rb := &plan.Plan{Phase: plan.PhaseRollingBack, Announcement: plan.Announcement{Procedure: plan.Bootstrap}, Survivor: "s",
		Tasks: map[string]plan.Task{"me": plan.TaskRemove}, Hosts: map[string]*plan.HostProgress{"me": {Step: plan.StepRemoved}}}
	if got := decide(rb, "me", journal()); got != actNone {
		t.Errorf("a removed host waits for the survivor's restore before rejoining, got %s", got)
	}
	rb.Tasks["me"] = plan.TaskRejoinOld
	if got := decide(rb, "me", journal()); got != actRollback {
		t.Errorf("rejoin-old must roll back, got %s", got)
	}
	if decide(nil, "me", journal()) != actNone {
		t.Fatal("no plan must mean nothing to do")
	}
}

// Load keeps what it parsed, yet sees every record written since, by this
// journal or by another one on the same folder (a recovery's).
func TestJournalLoadSeesEveryNewRecord(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := j.Load("p"); err != nil || e.Begun(jStop) {
		t.Fatalf("empty journal: %v, stop begun %v", err, e.Begun(jStop))
	}
	if err := j.Begin("p", jStop, nil); err != nil {
		t.Fatal(err)
	}
	first, err := j.Load("p")
	if err != nil || !first.Begun(jStop) || first.Done(jStop) {
		t.Fatalf("after Begin: %v", err)
	}
	if again, _ := j.Load("p"); again != first {
		t.Error("an unchanged journal was parsed again")
	}
	if err := other.Done("p", jStop, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	e, err := j.Load("p")
	if err != nil || !e.Done(jStop) || e.Get(jStop, "k") != "v" {
		t.Fatalf("a record written by another journal was not seen: %v", err)
	}
	if first.Done(jStop) {
		t.Error("entries handed out earlier changed under their reader")
	}
}

func TestJournalSurvivesTornLine(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Begin("p", jStop, map[string]string{"expected_pins": "7"}); err != nil {
		t.Fatal(err)
	}
	if err := j.Done("p", jStop, nil); err != nil {
		t.Fatal(err)
	}
	// The daemon died while writing the next record.
	f, err := os.OpenFile(filepath.Join(dir, "p.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"at":"2026-11-24T12:00:00Z","step":"swap","ev`)
	f.Close()
	e, err := j.Load("p")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Done(jStop) || e.Get(jStop, "expected_pins") != "7" {
		t.Fatal("completed step lost")
	}
	if e.Begun(jSwap) || e.Done(jSwap) {
		t.Fatal("a torn record must not count as begun or done")
	}
	plans, err := j.Plans()
	if err != nil || len(plans) != 1 || plans[0] != "p" {
		t.Fatalf("Plans = %v, %v", plans, err)
	}
}

func TestPinCIDAndNameReadsBothForms(t *testing.T) {
	cases := []struct {
		line, cid, name string
		ok              bool
	}{
		{`{"cid":"bafkreic3j4","name":"sample","type":"pin"}`, "bafkreic3j4", "sample", true},
		{`{"cid":{"/":"bafkreianuy"},"name":"old","type":2}`, "bafkreianuy", "old", true},
		{`{"name":"no cid"}`, "", "", false},
		{`not json`, "", "", false},
	}
	for _, tc := range cases {
		cid, name, ok := pinCIDAndName([]byte(tc.line))
		if cid != tc.cid || name != tc.name || ok != tc.ok {
			t.Errorf("%s: got %q %q %v", tc.line, cid, name, ok)
		}
	}
}
