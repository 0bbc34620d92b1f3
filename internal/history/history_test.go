package history

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
)

func TestRecordsEachChangeOnceAcrossRestarts(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	st := plan.NewState()
	_ = st.Apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: "A", Version: "1.0.8"}}, t0)
	a := &plan.Announcement{ID: "p", Version: "1.1.6", Procedure: plan.Standard, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour),
		Artifacts: []plan.Artifact{{Source: "x", SHA256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}}
	if err := st.Apply(plan.Command{Op: plan.OpPropose, Announcement: a, Signer: "op"}, t0); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "history.jsonl")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Observe(st, "p"); err != nil {
		t.Fatal(err)
	}
	_ = st.Apply(plan.Command{Op: plan.OpProgress, PlanID: "p", HostID: "A", Progress: &plan.HostProgress{Step: plan.StepPrepared}}, t0.Add(time.Second))
	_ = r.Observe(st, "p")
	_ = st.Apply(plan.Command{Op: plan.OpProgress, PlanID: "p", HostID: "A", Progress: &plan.HostProgress{Step: plan.StepVerified, Version: "1.1.6"}}, t0.Add(2*time.Second))
	_ = r.Observe(st, "p")
	// A restarted daemon replays the same log: nothing is written twice.
	r2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_ = r2.Observe(st, "")
	events, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"announced", "pending", "prepared", "switching", "verified", "done"}
	var got []string
	for _, e := range events {
		got = append(got, e.State)
	}
	if len(got) != len(want) {
		t.Fatalf("history %v, want the states %v once each", got, want)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Fatalf("history %v lacks %s", got, w)
		}
	}
}

// Reports that alternate between two plans, and a host that comes back to a
// step it had been at, are each recorded once.
func TestRecordsInterleavedPlansAndARepeatedStep(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	st := plan.NewState()
	for _, h := range []string{"A", "B"} {
		_ = st.Apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: h, Version: "1.0.8"}}, t0)
	}
	path := filepath.Join(t.TempDir(), "history.jsonl")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	at := t0
	apply := func(cmd plan.Command) {
		t.Helper()
		at = at.Add(time.Second)
		if err := st.Apply(cmd, at); err != nil {
			t.Fatalf("%s: %v", cmd.Op, err)
		}
		if err := r.Observe(st, cmd.PlanID); err != nil {
			t.Fatal(err)
		}
	}
	report := func(id, host string, step plan.Step) {
		apply(plan.Command{Op: plan.OpProgress, PlanID: id, HostID: host, Progress: &plan.HostProgress{Step: step}})
	}
	a := &plan.Announcement{ID: "p", Version: "1.1.6", Procedure: plan.Standard, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour),
		Artifacts: []plan.Artifact{{Source: "x", SHA256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}}
	apply(plan.Command{Op: plan.OpPropose, PlanID: "p", Announcement: a, Signer: "op"})
	report("p", "A", plan.StepPreparing)
	report("p", "B", plan.StepPreparing)
	apply(plan.Command{Op: plan.OpAbort, PlanID: "p", Reason: "operator"})
	b := *a
	b.ID = "q"
	apply(plan.Command{Op: plan.OpPropose, PlanID: "q", Announcement: &b, Signer: "op"})
	report("q", "A", plan.StepPreparing)
	_ = r.Observe(st, "p") // plan p again, between two reports of q
	report("q", "A", plan.StepPrepared)
	report("q", "A", plan.StepPreparing) // back to a step it had been at, later

	events, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range events {
		count[e.Plan+" "+e.Host+" "+e.State]++
	}
	for k, n := range count {
		if n != 1 && k != "q A preparing" {
			t.Errorf("%q recorded %d times", k, n)
		}
	}
	if n := count["q A preparing"]; n != 2 {
		t.Errorf("host A's two times in preparing recorded %d times, want 2: %v", n, count)
	}
	if n := count["p B preparing"]; n != 1 {
		t.Errorf("host B's preparing in plan p recorded %d times, want 1: %v", n, count)
	}
}
