package history

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
)

// BenchmarkObserve is the history's share of applying one host's progress
// report on a daemon of a 50-host cluster that has run 10 plans before: every
// daemon runs it for every report of every host. "plan" looks at the plan the
// command named, "all" at every plan (what each report cost before).
func BenchmarkObserve(b *testing.B) {
	const hosts, past = 50, 10
	t0 := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	st := plan.NewState()
	for i := range hosts {
		_ = st.Apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: fmt.Sprintf("h%02d", i), ClusterPeer: fmt.Sprintf("c%02d", i), Version: "1.0.8"}}, t0)
	}
	at := t0
	run := func(id string, fail bool) {
		at = at.Add(time.Minute)
		a := &plan.Announcement{ID: id, Version: "1.1.6", Procedure: plan.Standard, IssuedAt: at, ExpiresAt: at.Add(time.Hour),
			Artifacts: []plan.Artifact{{Source: "x", SHA256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}}
		if err := st.Apply(plan.Command{Op: plan.OpPropose, Announcement: a, Signer: "op"}, at); err != nil {
			b.Fatal(err)
		}
		if fail {
			_ = st.Apply(plan.Command{Op: plan.OpProgress, PlanID: id, HostID: "h00", Progress: &plan.HostProgress{Step: plan.StepFailed, Error: "x"}}, at)
		}
	}
	for i := range past {
		run(fmt.Sprintf("old%d", i), true)
	}
	run("cur", false)
	for _, scope := range []string{"plan", "all"} {
		b.Run(scope, func(b *testing.B) {
			r, err := Open(filepath.Join(b.TempDir(), "history.jsonl"))
			if err != nil {
				b.Fatal(err)
			}
			changed := "cur"
			if scope == "all" {
				changed = ""
			}
			_ = r.Observe(st, changed)
			b.ReportAllocs()
			for b.Loop() {
				// Nothing new: as for 49 of the 50 hosts' events at each report.
				if err := r.Observe(st, changed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
