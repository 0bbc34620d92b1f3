package metrics

import (
	"net/http"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/plan"
)

func TestArtifactBytesAreCountedBySource(t *testing.T) {
	m := New(&fakeSource{st: plan.NewState()})
	m.ArtifactFetched("source", 1000)
	m.ArtifactFetched("peer", 300)
	m.ArtifactFetched("peer", 200)
	m.ArtifactServed(700)
	m.ArtifactAnswered("ok")
	m.ArtifactAnswered("not_held")
	m.ArtifactAnswered("not_held")
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
	got := map[string]float64{}
	for _, mt := range fams["upgraded_artifact_fetched_bytes_total"].GetMetric() {
		got[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
	}
	if got["source"] != 1000 || got["peer"] != 500 {
		t.Errorf("fetched bytes by source: %v, want source 1000 and peer 500", got)
	}
	if s := fams["upgraded_artifact_served_bytes_total"].GetMetric()[0].GetCounter().GetValue(); s != 700 {
		t.Errorf("served bytes %v, want 700", s)
	}
	answered := map[string]float64{}
	for _, mt := range fams["upgraded_artifact_requests_total"].GetMetric() {
		answered[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
	}
	if answered["ok"] != 1 || answered["not_held"] != 2 {
		t.Errorf("requests by answer: %v, want ok 1 and not_held 2", answered)
	}
}
