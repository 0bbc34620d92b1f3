package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/statebackup"
)

type fakeSource struct {
	st     *plan.State
	leader string
}

func (f *fakeSource) State() *plan.State { return f.st.Clone() }
func (f *fakeSource) Leader() string     { return f.leader }
func (f *fakeSource) Members() int       { return 3 }
func (f *fakeSource) Voters() int        { return 2 }
func (f *fakeSource) Backups() ([]*statebackup.Manifest, error) {
	return []*statebackup.Manifest{{Kind: statebackup.KindLiveExport, Size: 100}, {Kind: statebackup.KindLiveExport, Size: 50}}, nil
}

func TestScrapeParsesWithThePrometheusParser(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	st := plan.NewState()
	_ = st.Apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: "A", Version: "1.0.8"}}, t0)
	a := &plan.Announcement{ID: "p", Version: "1.1.6", Procedure: plan.Standard, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour),
		Artifacts: []plan.Artifact{{Source: "x", SHA256: strings.Repeat("a", 64)}}}
	_ = st.Apply(plan.Command{Op: plan.OpPropose, Announcement: a}, t0)
	src := &fakeSource{st: st, leader: "A"}
	m := New(src)
	m.Observe(st)
	_ = st.Apply(plan.Command{Op: plan.OpProgress, PlanID: "p", HostID: "A", Progress: &plan.HostProgress{Step: plan.StepPrepared}}, t0.Add(2*time.Second))
	m.Observe(st)
	m.Rejected("untrusted")
	srv, err := m.Listen("127.0.0.1:0", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + srv.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"upgraded_plan_phase", "upgraded_host_step", "upgraded_step_duration_seconds",
		"upgraded_backups", "upgraded_backup_bytes", "upgraded_announcements_rejected_total", "upgraded_raft_has_leader"} {
		if fams[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	phase := fams["upgraded_plan_phase"].GetMetric()[0]
	for _, l := range phase.GetLabel() {
		if l.GetName() == "phase" && l.GetValue() != "switching" {
			t.Errorf("phase label %s", l.GetValue())
		}
	}
	if h := fams["upgraded_step_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() < 1.9 {
		t.Errorf("the pending step lasted 2s: %v", h)
	}
	if b := fams["upgraded_backup_bytes"].GetMetric()[0].GetGauge().GetValue(); b != 150 {
		t.Errorf("backup bytes %v", b)
	}
	if fams["upgraded_raft_voters"] == nil || fams["upgraded_raft_voters"].GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Errorf("upgraded_raft_voters: %v, want 2", fams["upgraded_raft_voters"])
	}
	// healthz: 200 with a leader, 503 without.
	for leader, want := range map[string]int{"A": 200, "": 503} {
		src.leader = leader
		r, err := http.Get("http://" + srv.Addr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("healthz with leader %q: %d, want %d", leader, r.StatusCode, want)
		}
	}
}
