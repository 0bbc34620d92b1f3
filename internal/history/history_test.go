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
