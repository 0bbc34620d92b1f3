package control

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
)

func TestReportCarriesWhatTheContractPromises(t *testing.T) {
	p := &plan.Plan{Announcement: plan.Announcement{ID: "p1", Version: "1.1.6", Procedure: plan.Bootstrap},
		Phase: plan.PhaseSwitching, Survivor: "host-a", SurvivorReason: "holds the most pins",
		Hosts: map[string]*plan.HostProgress{
			"host-a": {Step: plan.StepVerified, Version: "1.1.6", Pins: 7},
			"host-b": {Step: plan.StepFailed, Version: "1.0.8", Pins: 3, Error: "pinset holds 3 of 7 pins"},
		}}
	st := &Status{Leader: "host-a", Members: []string{"host-a", "host-b"}, Plan: p, Hosts: map[string]*plan.Host{
		"host-a": {ID: "host-a", ClusterPeer: "peer-a", Version: "1.1.6"},
		"host-b": {ID: "host-b", ClusterPeer: "peer-b", Version: "1.0.8"},
	}}
	r := MakeReport(st, time.Now())
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"plan", "phase", "peers"} {
		if _, ok := generic[key]; !ok {
			t.Fatalf("status --json lacks %q: %s", key, b)
		}
	}
	peer := generic["peers"].([]any)[1].(map[string]any)
	for key, want := range map[string]any{"peer_id": "peer-b", "version": "1.0.8", "phase": "failed", "pins": 3.0, "last_error": "pinset holds 3 of 7 pins"} {
		if peer[key] != want {
			t.Errorf("peer %s = %v, want %v", key, peer[key], want)
		}
	}
	var out bytes.Buffer
	RenderTable(&out, r)
	for _, want := range []string{"bootstrap upgrade to 1.1.6", "survivor", "holds the most pins", "peer-b", "pinset holds 3 of 7 pins"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestReportShowsVoters: with more daemons than voters, status says how many
// vote; when all do (small clusters) it says nothing more.
func TestReportShowsVoters(t *testing.T) {
	st := &Status{Leader: "a", Members: []string{"a", "b", "c", "d"}, Voters: []string{"a", "b", "c"}}
	r := MakeReport(st, time.Now())
	var out bytes.Buffer
	RenderTable(&out, r)
	if !strings.Contains(out.String(), "4 daemons (3 voting)") {
		t.Fatalf("table does not say how many vote:\n%s", out.String())
	}
	b, _ := json.Marshal(r)
	if !strings.Contains(string(b), `"voters":["a","b","c"]`) {
		t.Fatalf("status --json lacks the voters: %s", b)
	}
	st.Voters = st.Members
	out.Reset()
	RenderTable(&out, MakeReport(st, time.Now()))
	if !strings.Contains(out.String(), "no plan yet; 4 daemons, leader") {
		t.Fatalf("all voting: want the plain count:\n%s", out.String())
	}
}
