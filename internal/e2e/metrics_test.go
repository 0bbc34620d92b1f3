package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
)

// TestMetricsDuringAnUpgrade scrapes a daemon's /metrics while a plan runs
// and parses every answer with the Prometheus text parser.
func TestMetricsDuringAnUpgrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 4, tune: func(i int, cfg *config.Config) {
		if i == 0 {
			cfg.MetricsAddress = addr
		}
	}})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Announce(ctx, 0, rel, "--procedure", "standard")
	if err != nil {
		t.Fatal(err)
	}
	phases := map[string]bool{}
	var last map[string]int
	err = simtest.WaitFor(ctx, "the plan to end, seen through /metrics", func() bool {
		fams, err := scrape("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		last = map[string]int{}
		for name, f := range fams {
			last[name] = len(f.GetMetric())
		}
		for _, m := range fams["upgraded_plan_phase"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "phase" {
					phases[l.GetValue()] = true
				}
			}
		}
		return phases["done"]
	})
	if err != nil {
		t.Fatal(err)
	}
	if !phases["switching"] && !phases["preparing"] {
		t.Errorf("no phase before done was seen: %v", phases)
	}
	for _, name := range []string{"upgraded_host_step", "upgraded_step_duration_seconds", "upgraded_backups", "upgraded_backup_bytes",
		"upgraded_last_successful_upgrade_timestamp_seconds", "upgraded_raft_has_leader"} {
		if last[name] == 0 {
			t.Errorf("metric %s missing after plan %s: %v", name, id, last)
		}
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", err, resp)
	}
	resp.Body.Close()
}

func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}
